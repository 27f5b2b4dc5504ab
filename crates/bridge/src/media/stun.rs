//! Finding the public address of the media socket with one STUN binding request (RFC 8489),
//! sent from the media socket itself so the NAT mapping is the one calls will use.

use std::net::SocketAddr;
use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::net::UdpSocket;

/// RFC 8489 magic cookie.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Why the public address could not be found.
#[derive(Debug, thiserror::Error)]
pub enum StunError {
    /// The server name does not resolve.
    #[error("cannot resolve STUN server {0}")]
    Resolve(String),
    /// No (matching) answer in time.
    #[error("no answer from STUN server {0} within {1:?}")]
    Timeout(String, Duration),
    /// The socket failed.
    #[error("STUN over the media socket failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A binding request with a random transaction id.
fn binding_request() -> ([u8; 20], [u8; 12]) {
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 12];
    for chunk in id.chunks_mut(8) {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            .to_be_bytes();
        chunk.copy_from_slice(&random[..chunk.len()]);
    }
    let mut request = [0u8; 20];
    request[0..2].copy_from_slice(&0x0001u16.to_be_bytes()); // Binding request
    request[2..4].copy_from_slice(&0u16.to_be_bytes()); // no attributes
    request[4..8].copy_from_slice(&MAGIC_COOKIE);
    request[8..20].copy_from_slice(&id);
    (request, id)
}

/// Asks `server` (`host:port`) which address our packets come from. Retransmits twice.
///
/// # Errors
/// When the server cannot be resolved or does not answer.
pub async fn public_address(
    socket: &UdpSocket,
    server: &str,
    timeout: Duration,
) -> Result<SocketAddr, StunError> {
    let local_v4 = socket.local_addr()?.is_ipv4();
    let target = tokio::net::lookup_host(server)
        .await
        .map_err(|_| StunError::Resolve(server.to_owned()))?
        .find(|a| a.is_ipv4() == local_v4)
        .ok_or_else(|| StunError::Resolve(server.to_owned()))?;
    let (request, id) = binding_request();
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + timeout;
    let per_try = timeout / 3;
    loop {
        socket.send_to(&request, target).await?;
        let try_until = (tokio::time::Instant::now() + per_try).min(deadline);
        while let Ok(received) =
            tokio::time::timeout_at(try_until, socket.recv_from(&mut buf)).await
        {
            let (n, from) = received?;
            if from != target {
                continue;
            }
            if let Some(mapped) = mapped_address(&buf[..n], &id) {
                return Ok(mapped);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StunError::Timeout(server.to_owned(), timeout));
        }
    }
}

/// The (XOR-)MAPPED-ADDRESS of a binding success response to transaction `id`. Parsed here
/// rather than with str0m's ICE parser, which insists on ICE's MESSAGE-INTEGRITY that plain
/// STUN servers do not send.
fn mapped_address(response: &[u8], id: &[u8; 12]) -> Option<SocketAddr> {
    if response.len() < 20
        || response[0..2] != [0x01, 0x01]
        || response[4..8] != MAGIC_COOKIE
        || response[8..20] != *id
    {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([response[2], response[3]]));
    let attributes = response.get(20..20 + length)?;
    let mut at = 0;
    let mut plain = None;
    while at + 4 <= attributes.len() {
        let kind = u16::from_be_bytes([attributes[at], attributes[at + 1]]);
        let len = usize::from(u16::from_be_bytes([attributes[at + 2], attributes[at + 3]]));
        let value = attributes.get(at + 4..at + 4 + len)?;
        match kind {
            0x0020 => return address(value, Some(id)),
            0x0001 => plain = address(value, None),
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    plain
}

/// An address attribute's value; XORed with the cookie (and transaction id) when `xor_id`.
fn address(value: &[u8], xor_id: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let family = *value.get(1)?;
    let mut port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]);
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE);
    if let Some(id) = xor_id {
        port ^= 0x2112;
        mask[4..].copy_from_slice(id);
    } else {
        mask = [0; 16];
    }
    let ip = match family {
        0x01 => {
            let raw: [u8; 4] = value.get(4..8)?.try_into().ok()?;
            let bytes: Vec<u8> = raw.iter().zip(&mask[..4]).map(|(b, m)| b ^ m).collect();
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        }
        0x02 => {
            let raw: [u8; 16] = value.get(4..20)?.try_into().ok()?;
            let mut bytes = [0u8; 16];
            for (i, b) in raw.iter().enumerate() {
                bytes[i] = b ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A binding success response for `request` telling the sender it is at `mapped` (for tests
/// and the benchmark's fake STUN server).
pub fn binding_response(request: &[u8], mapped: SocketAddr) -> Option<Vec<u8>> {
    if request.len() < 20 || request[0..2] != [0, 1] || request[4..8] != MAGIC_COOKIE {
        return None;
    }
    let SocketAddr::V4(v4) = mapped else {
        return None;
    };
    let port = v4.port() ^ 0x2112;
    let ip = u32::from(*v4.ip()) ^ u32::from_be_bytes(MAGIC_COOKIE);
    let mut response = Vec::with_capacity(32);
    response.extend_from_slice(&0x0101u16.to_be_bytes());
    response.extend_from_slice(&12u16.to_be_bytes());
    response.extend_from_slice(&request[4..20]);
    response.extend_from_slice(&0x0020u16.to_be_bytes()); // XOR-MAPPED-ADDRESS
    response.extend_from_slice(&8u16.to_be_bytes());
    response.extend_from_slice(&[0, 1]);
    response.extend_from_slice(&port.to_be_bytes());
    response.extend_from_slice(&ip.to_be_bytes());
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_public_address_comes_from_the_stun_servers_answer() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let server_addr = server.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            // Drop the first request: the client must retransmit.
            let _ = server.recv_from(&mut buf).await;
            let (n, from) = server.recv_from(&mut buf).await.expect("request");
            let public: SocketAddr = "203.0.113.5:41000".parse().expect("addr");
            let response = binding_response(&buf[..n], public).expect("a binding request");
            server.send_to(&response, from).await.expect("send");
        });
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let mapped = public_address(&socket, &server_addr.to_string(), Duration::from_secs(3))
            .await
            .expect("answer");
        assert_eq!(mapped, "203.0.113.5:41000".parse().expect("addr"));
    }

    #[tokio::test]
    async fn a_silent_stun_server_times_out() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let err = public_address(
            &socket,
            &silent.local_addr().expect("addr").to_string(),
            Duration::from_millis(300),
        )
        .await
        .expect_err("silence");
        assert!(matches!(err, StunError::Timeout(..)), "{err:?}");
    }
}
