//! Datagrams in batches: one `recvmmsg` reads every datagram waiting on the media socket (up to
//! a burst), one `sendmmsg` sends everything the engine produced from it.
//!
//! Why: with hundreds of calls a wake-up of the media thread finds several datagrams waiting,
//! and each one used to cost a `recvfrom` and its echo a `sendto`, plus one more `recvfrom` to
//! learn that the queue was empty. The per-datagram work inside the kernel (the UDP/IP path,
//! the loopback delivery) stays; what goes is a system call entry and exit per datagram.
//!
//! Both halves are owned by the media thread alone (their headers hold raw pointers and are not
//! `Send`), so they are made on it.
//!
//! Public for the relay benchmark's floor (`examples/udp_floor.rs`), which moves the same
//! datagrams through these same calls with no call behind them.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams taken in one `recvmmsg` (and sent in one `sendmmsg`).
pub const BURST: usize = 64;

/// Room for one datagram: audio, RTCP, DTLS and STUN all fit in far less than an MTU.
const DATAGRAM: usize = 2048;

/// What one `recvmmsg` read.
pub enum Read {
    /// This many datagrams; a full burst means more may be waiting.
    Datagrams(usize),
    /// The queue was empty.
    Empty,
}

/// The receiving half: buffers and headers for a burst, reused for every call.
pub struct Receiver {
    headers: MultiHeaders<SockaddrStorage>,
    buffers: Box<[[u8; DATAGRAM]; BURST]>,
    read: Vec<(usize, Option<SocketAddr>)>,
}

impl Default for Receiver {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    pub fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(BURST, None),
            buffers: Box::new([[0; DATAGRAM]; BURST]),
            read: Vec::with_capacity(BURST),
        }
    }

    /// Reads what is waiting, up to a burst, without blocking, and hands each datagram with
    /// its source to `each`.
    pub fn receive(
        &mut self,
        socket: &impl AsRawFd,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<Read> {
        self.read.clear();
        {
            let mut buffers = self.buffers.iter_mut();
            let mut slices: [[IoSliceMut<'_>; 1]; BURST] = std::array::from_fn(|_| {
                // `BURST` buffers for `BURST` slices: `next` always has one.
                [IoSliceMut::new(
                    buffers.next().map_or(&mut [][..], |b| &mut b[..]),
                )]
            });
            let results = match recvmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(results) => results,
                Err(Errno::EAGAIN) => return Ok(Read::Empty),
                Err(errno) => return Err(errno.into()),
            };
            for message in results {
                let source = message.address.as_ref().and_then(socket_addr);
                self.read.push((message.bytes, source));
            }
        }
        for (buffer, &(len, source)) in self.buffers.iter().zip(&self.read) {
            if let Some(source) = source {
                each(source, &buffer[..len.min(DATAGRAM)]);
            }
        }
        Ok(match self.read.len() {
            0 => Read::Empty,
            n => Read::Datagrams(n),
        })
    }
}

/// The sending half: datagrams queued while the engine is drained, sent together.
pub struct Sender {
    headers: MultiHeaders<SockaddrStorage>,
    queue: Vec<(SocketAddr, Vec<u8>)>,
    addresses: Vec<Option<SockaddrStorage>>,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    pub fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(BURST, None),
            queue: Vec::with_capacity(BURST),
            addresses: Vec::with_capacity(BURST),
        }
    }

    /// Queues a datagram; a full burst goes out at once.
    pub fn push(&mut self, socket: &impl AsRawFd, destination: SocketAddr, contents: Vec<u8>) {
        self.queue.push((destination, contents));
        if self.queue.len() == BURST {
            self.flush(socket);
        }
    }

    /// Sends everything queued. A datagram the kernel refuses (a full send buffer: the host
    /// cannot keep up) is dropped as the network would drop it, rather than stall every call.
    pub fn flush(&mut self, socket: &impl AsRawFd) {
        let mut next = 0;
        while next < self.queue.len() {
            let batch = &self.queue[next..];
            self.addresses.clear();
            self.addresses
                .extend(batch.iter().map(|(to, _)| Some(SockaddrStorage::from(*to))));
            let slices: Vec<[IoSlice<'_>; 1]> =
                batch.iter().map(|(_, c)| [IoSlice::new(c)]).collect();
            let no_control: &[ControlMessage<'_>] = &[];
            match sendmmsg(
                socket.as_raw_fd(),
                &mut self.headers,
                &slices,
                &self.addresses,
                no_control,
                MsgFlags::MSG_DONTWAIT,
            ) {
                // The kernel took this many from the front; the first one it did not take
                // failed and is the next call's first.
                Ok(results) => next += results.count().max(1),
                Err(errno) => {
                    let destination = batch[0].0;
                    tracing::debug!(%destination, error = %errno, "media send failed");
                    next += 1;
                }
            }
        }
        self.queue.clear();
    }
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        b.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        (a, b)
    }

    #[test]
    fn a_burst_is_read_in_order_with_its_sources_and_an_empty_queue_says_so() {
        let (ours, peer) = pair();
        let other = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = ours.local_addr().expect("addr");
        for i in 0..5u8 {
            let from = if i % 2 == 0 { &peer } else { &other };
            from.send_to(&[i; 3], to).expect("send");
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut receiver = Receiver::new();
        let mut got = Vec::new();
        let read = receiver
            .receive(&ours, |source, data| got.push((source, data.to_vec())))
            .expect("receive");
        assert!(matches!(read, Read::Datagrams(5)));
        let expected: Vec<_> = (0..5u8)
            .map(|i| {
                let from = if i % 2 == 0 { &peer } else { &other };
                (from.local_addr().expect("addr"), vec![i; 3])
            })
            .collect();
        assert_eq!(got, expected);
        let read = receiver
            .receive(&ours, |_, _| panic!("nothing was sent"))
            .expect("receive");
        assert!(matches!(read, Read::Empty));
    }

    #[test]
    fn more_than_a_burst_is_read_over_several_calls() {
        let (ours, peer) = pair();
        let to = ours.local_addr().expect("addr");
        let total = BURST + 10;
        for i in 0..total {
            peer.send_to(&(i as u32).to_be_bytes(), to).expect("send");
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut receiver = Receiver::new();
        let mut got = Vec::new();
        let mut full_bursts = 0;
        loop {
            match receiver
                .receive(&ours, |_, data| got.push(data.to_vec()))
                .expect("receive")
            {
                Read::Datagrams(n) if n == BURST => full_bursts += 1,
                Read::Datagrams(_) => {}
                Read::Empty => break,
            }
        }
        assert_eq!(full_bursts, 1);
        let expected: Vec<_> = (0..total)
            .map(|i| (i as u32).to_be_bytes().to_vec())
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn queued_datagrams_reach_each_destination_and_a_refused_one_does_not_stop_the_rest() {
        let ours = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (a, b) = pair();
        b.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        a.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut sender = Sender::new();
        // An IPv6 destination on an IPv4 socket: the kernel refuses that one datagram.
        let refused: SocketAddr = "[::1]:9".parse().expect("addr");
        sender.push(&ours, a.local_addr().expect("addr"), b"one".to_vec());
        sender.push(&ours, refused, b"lost".to_vec());
        sender.push(&ours, b.local_addr().expect("addr"), b"two".to_vec());
        // Over a burst: the first full burst goes out from `push`, the rest from `flush`.
        for i in 0..BURST {
            sender.push(&ours, a.local_addr().expect("addr"), vec![i as u8]);
        }
        sender.flush(&ours);
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).expect("a");
        assert_eq!(
            (&buf[..n], from),
            (&b"one"[..], ours.local_addr().expect("addr"))
        );
        let (n, _) = b.recv_from(&mut buf).expect("b");
        assert_eq!(&buf[..n], b"two");
        for i in 0..BURST {
            let (n, _) = a.recv_from(&mut buf).expect("a");
            assert_eq!(&buf[..n], &[i as u8]);
        }
    }
}
