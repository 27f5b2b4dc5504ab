//! A WebRTC peer that behaves like WhatsApp's media server: ice-lite, offers with
//! `a=setup:actpass` and WhatsApp's Opus format line, Opus on payload type 111 and
//! telephone-event on 126 (`shared/reference/platform-apis.md` A1.6, A1.11).
//!
//! [`whatsapp_rtc`] and [`offer`] are sans-IO, for simulations; [`UdpPeer`] runs one over a
//! real UDP socket on loopback, for end-to-end tests (DTLS-SRTP on the wire).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// WhatsApp's Opus format line, from a real call.
pub const WHATSAPP_FMTP: &str = "a=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1";

/// An `Rtc` configured like WhatsApp's media server.
pub fn whatsapp_rtc(now: Instant) -> Rtc {
    whatsapp_config().build(now)
}

/// The configuration of [`whatsapp_rtc`], for a test to add to (statistics, say).
pub fn whatsapp_config() -> RtcConfig {
    let mut config = RtcConfig::new()
        .set_ice_lite(true)
        .clear_codecs()
        .set_rtp_mode(true);
    let codecs = config.codec_config();
    codecs.add_config(
        Pt::new_with_value(111),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(20),
            use_inband_fec: Some(true),
            ..FormatParams::default()
        },
    );
    codecs.add_config(
        Pt::new_with_value(126),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams::default(),
    );
    config
}

/// The offer WhatsApp sends in a `connect` webhook, from `rtc`: the audio m-line, pending
/// offer, and the SDP text with WhatsApp's format line.
///
/// # Panics
/// If str0m cannot make an offer (a bug in the test setup).
pub fn offer(rtc: &mut Rtc) -> (Mid, SdpPendingOffer, String) {
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let Some((offer, pending)) = change.apply() else {
        panic!("str0m made no offer")
    };
    let text = offer
        .to_sdp_string()
        .lines()
        .map(|l| {
            if l.starts_with("a=fmtp:111 ") {
                WHATSAPP_FMTP.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    (mid, pending, text)
}

/// Applies the bridge's answer to our pending offer. With none pending it was applied already
/// (WhatsApp gets the same SDP in `pre_accept` and `accept`): Ok.
///
/// # Errors
/// An unparsable answer, or one str0m refuses.
pub fn apply_answer(
    rtc: &mut Rtc,
    pending: Option<SdpPendingOffer>,
    answer: &str,
) -> Result<(), String> {
    let Some(pending) = pending else {
        return Ok(());
    };
    let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())
}

/// What a [`UdpPeer`] has seen.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The other side closed (DTLS close_notify).
    pub closed: bool,
    /// Audio packets received: (payload type, RTP timestamp, payload).
    pub received: Vec<(u8, u32, Vec<u8>)>,
}

enum Command {
    Offer(oneshot::Sender<String>),
    AcceptAnswer(String, oneshot::Sender<Result<(), String>>),
    Answer(String, oneshot::Sender<Result<String, String>>),
    Send {
        pt: u8,
        time: Option<u32>,
        payload: Vec<u8>,
    },
    Close,
}

/// A WhatsApp-like peer on a real UDP socket on loopback, driven by its own task.
#[derive(Clone)]
pub struct UdpPeer {
    /// The peer's address.
    pub addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    observed: Arc<Mutex<Observed>>,
}

impl UdpPeer {
    /// Starts a peer on 127.0.0.1 with an ephemeral port.
    ///
    /// # Panics
    /// If no loopback socket can be bound.
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = socket.local_addr().expect("local addr");
        let mut rtc = whatsapp_rtc(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        let (commands, rx) = mpsc::unbounded_channel();
        let observed = Arc::new(Mutex::new(Observed::default()));
        tokio::spawn(run(rtc, socket, rx, observed.clone()));
        Self {
            addr,
            commands,
            observed,
        }
    }

    /// Makes WhatsApp's offer (an inbound call).
    pub async fn offer(&self) -> String {
        let (reply, offer) = oneshot::channel();
        let _ = self.commands.send(Command::Offer(reply));
        offer.await.expect("peer task alive")
    }

    /// Applies the bridge's answer to our offer.
    ///
    /// # Errors
    /// When the answer does not fit.
    pub async fn accept_answer(&self, answer: &str) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::AcceptAnswer(answer.to_owned(), reply));
        done.await.expect("peer task alive")
    }

    /// Answers the bridge's offer (an outbound call).
    ///
    /// # Errors
    /// When the offer is unusable.
    pub async fn answer(&self, offer: &str) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        let _ = self.commands.send(Command::Answer(offer.to_owned(), reply));
        answer.await.expect("peer task alive")
    }

    /// Sends `count` Opus packets 20 ms apart, payload `payload(i)`.
    pub async fn talk(&self, count: usize, payload: impl Fn(usize) -> Vec<u8>) {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..count {
            tick.tick().await;
            let _ = self.commands.send(Command::Send {
                pt: 111,
                time: None,
                payload: payload(i),
            });
        }
    }

    /// Presses a key: RFC 4733 telephone-event packets (start, continuation, three ends).
    pub async fn press(&self, key: char, start: u32) {
        let event = match key {
            '0'..='9' => key as u8 - b'0',
            '*' => 10,
            '#' => 11,
            _ => 12,
        };
        for (duration, end) in [
            (160u16, false),
            (320, false),
            (480, true),
            (480, true),
            (480, true),
        ] {
            let d = duration.to_be_bytes();
            let flags = if end { 0x80 | 10 } else { 10 };
            let _ = self.commands.send(Command::Send {
                pt: 126,
                time: Some(start),
                payload: vec![event, flags, d[0], d[1]],
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the peer's side (DTLS close_notify) and stops it.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }

    /// What the peer has seen so far.
    pub fn observed(&self) -> Observed {
        self.observed.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for what the peer has seen.
    ///
    /// # Panics
    /// When it does not within `limit`.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&Observed) -> bool) -> Observed {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let observed = self.observed();
            if done(&observed) {
                return observed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "peer {} did not get there within {limit:?}: connected={}, closed={}, received {} packets",
                self.addr,
                observed.connected,
                observed.closed,
                observed.received.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct State {
    rtc: Rtc,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    seq: u64,
    time: u32,
}

async fn run(
    rtc: Rtc,
    socket: UdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    observed: Arc<Mutex<Observed>>,
) {
    let local = socket.local_addr().expect("local addr");
    let mut state = State {
        rtc,
        mid: None,
        pending: None,
        seq: 7000,
        time: 96_000,
    };
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = match drain(&mut state, &socket, &observed).await {
            Some(timeout) => timeout,
            None => return,
        };
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Close) => {
                    let _ = state.rtc.close();
                    let _ = drain(&mut state, &socket, &observed).await;
                    return;
                }
                Some(command) => execute(&mut state, command),
            },
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    let _ = state.rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout)) => {
                let _ = state.rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

fn execute(state: &mut State, command: Command) {
    match command {
        Command::Offer(reply) => {
            let (mid, pending, text) = offer(&mut state.rtc);
            state.mid = Some(mid);
            state.pending = Some(pending);
            let _ = reply.send(text);
        }
        Command::AcceptAnswer(answer, reply) => {
            let result = match state.pending.take() {
                None => Err("no offer pending".to_owned()),
                pending => apply_answer(&mut state.rtc, pending, &answer),
            };
            let _ = reply.send(result);
        }
        Command::Answer(offer, reply) => {
            let result = SdpOffer::from_sdp_string(&offer)
                .map_err(|e| e.to_string())
                .and_then(|offer| {
                    state
                        .rtc
                        .sdp_api()
                        .accept_offer(offer)
                        .map_err(|e| e.to_string())
                })
                .map(|answer| answer.to_sdp_string());
            let _ = reply.send(result);
        }
        Command::Send { pt, time, payload } => {
            let Some(mid) = state.mid else { return };
            state.seq += 1;
            let time = time.unwrap_or_else(|| {
                state.time = state.time.wrapping_add(960);
                state.time
            });
            let mut api = state.rtc.direct_api();
            if let Some(stream) = api.stream_tx_by_mid(mid, None) {
                let seq: SeqNo = state.seq.into();
                stream.write_rtp(RtpWrite::new(
                    Pt::new_with_value(pt),
                    seq,
                    time,
                    Instant::now(),
                    payload,
                ));
            }
        }
        Command::Close => {}
    }
}

/// Drains the peer's output; `None` once it is closed for good.
async fn drain(
    state: &mut State,
    socket: &UdpSocket,
    observed: &Mutex<Observed>,
) -> Option<Instant> {
    loop {
        match state.rtc.poll_output() {
            Ok(Output::Timeout(at)) => {
                return state.rtc.is_alive().then_some(at);
            }
            Ok(Output::Transmit(t)) => {
                let _ = socket.send_to(&t.contents, t.destination).await;
            }
            Ok(Output::Event(event)) => match event {
                Event::Connected => observed.lock().expect("lock").connected = true,
                Event::Closed => observed.lock().expect("lock").closed = true,
                Event::MediaAdded(added) => state.mid = Some(added.mid),
                Event::RtpPacket(packet) => observed.lock().expect("lock").received.push((
                    *packet.header.payload_type,
                    packet.header.timestamp,
                    packet.payload.to_vec(),
                )),
                _ => {}
            },
            Err(_) => return None,
        }
    }
}
