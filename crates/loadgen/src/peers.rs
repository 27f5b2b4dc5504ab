//! The callers: one thread, one `mio` poll, one UDP socket and one str0m `Rtc` per call (ice-lite,
//! WhatsApp's offer, RTP mode), like WhatsApp's media servers.
//!
//! ```text
//! main (tokio) ──Control::{Offer, Answer, StopSending, Finish}──▶ callers thread ◀──▶ N UDP sockets
//! ```
//!
//! Every connected call sends one 80-byte Opus packet per 20 ms, its calls spread over the 20 ms
//! (a 1 ms slot each), so the load is smooth. Each payload carries the call, a sequence number and
//! the send time; the echo comes back untouched, and its kernel receive timestamp
//! (`SO_TIMESTAMPNS`) minus the send time is the round trip through the bridge, without the time
//! this thread took to get round to reading it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use nix::sys::time::TimeSpec;
use str0m::change::SdpPendingOffer;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::oneshot;

/// Opus TOC byte: SILK wideband, 20 ms, mono.
const OPUS_TOC: u8 = 0x48;
const MAGIC: u32 = 0x4C4F_4144; // "LOAD"
const PAYLOAD_BYTES: usize = 80;
const FRAME: Duration = Duration::from_millis(20);
const WAKE: Token = Token(usize::MAX);

/// What the main thread asks of the callers.
pub enum Control {
    /// Start call `idx`: a new peer and its offer.
    Offer {
        idx: usize,
        reply: oneshot::Sender<String>,
    },
    /// The bridge's answer for call `idx` (from `pre_accept` or `accept`).
    Answer { idx: usize, sdp: String },
    /// Stop sending audio (still receive the last echoes).
    StopSending,
    /// Hand over what was measured and stop.
    Finish { reply: oneshot::Sender<Outcome> },
}

/// What one call saw.
#[derive(Debug, Default, Clone)]
pub struct CallReport {
    pub connected_at: Option<Instant>,
    pub first_echo_at: Option<Instant>,
    pub sent: u64,
    /// Distinct packets echoed back.
    pub echoed: u64,
    pub duplicates: u64,
    /// Echoes carrying another call's packets (cross-talk).
    pub misrouted: u64,
    pub error: Option<String>,
}

/// Everything measured.
pub struct Outcome {
    pub calls: Vec<CallReport>,
    /// Round trips, microseconds.
    pub rtt_us: Vec<u32>,
    /// How late the sender ran against its 20 ms schedule, microseconds.
    pub send_lag_us: Vec<u32>,
}

/// The main thread's handle on the callers thread.
pub struct Callers {
    control: std_mpsc::Sender<Control>,
    waker: Arc<Waker>,
}

impl Callers {
    /// Starts the thread, for `calls` calls.
    pub fn start(calls: usize) -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (control, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("callers".into())
            .spawn(move || Driver::new(poll, rx, calls.max(1)).run())?;
        Ok(Self { control, waker })
    }

    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
        let _ = self.waker.wake();
    }
}

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    scheduled: Option<Instant>,
    seq: u64,
    rtp_time: u32,
    echoed: Vec<u64>,
    report: CallReport,
}

struct Driver {
    poll: Poll,
    calls: usize,
    control: std_mpsc::Receiver<Control>,
    peers: Vec<Option<Peer>>,
    timeouts: BinaryHeap<Reverse<(Instant, usize)>>,
    sends: BinaryHeap<Reverse<(Instant, usize)>>,
    sending: bool,
    rtt_us: Vec<u32>,
    send_lag_us: Vec<u32>,
}

impl Driver {
    fn new(poll: Poll, control: std_mpsc::Receiver<Control>, calls: usize) -> Self {
        Self {
            poll,
            calls,
            control,
            peers: Vec::new(),
            timeouts: BinaryHeap::new(),
            sends: BinaryHeap::new(),
            sending: true,
            rtt_us: Vec::with_capacity(1 << 20),
            send_lag_us: Vec::with_capacity(1 << 20),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            self.send_due(now);
            self.time_out_due(now);
            let next = [self.sends.peek(), self.timeouts.peek()]
                .into_iter()
                .flatten()
                .map(|Reverse((at, _))| *at)
                .min();
            // epoll waits whole milliseconds: the last stretch before a send is slept
            // precisely instead, so calls go out on their own slots, not in 1 ms bursts.
            // (Echoes arriving meanwhile keep their kernel timestamps.)
            let mut wait = next.map(|at| at.saturating_duration_since(Instant::now()));
            if let Some(short) = wait.filter(|w| *w < Duration::from_millis(1)) {
                std::thread::sleep(short);
                wait = Some(Duration::ZERO);
            } else if let Some(long) = wait {
                wait = Some(long - Duration::from_millis(1));
            }
            if let Err(err) = self.poll.poll(&mut events, wait) {
                if err.kind() != ErrorKind::Interrupted {
                    eprintln!("loadgen: callers poll failed: {err}");
                    return;
                }
            }
            for event in &events {
                if event.token() == WAKE {
                    continue;
                }
                self.read(event.token().0, &mut buf);
            }
            while let Ok(control) = self.control.try_recv() {
                if !self.control(control) {
                    return;
                }
            }
        }
    }

    /// Carries out one control message; false when it is time to stop.
    fn control(&mut self, control: Control) -> bool {
        match control {
            Control::Offer { idx, reply } => match self.new_peer(idx) {
                Ok(offer) => {
                    let _ = reply.send(offer);
                }
                Err(err) => eprintln!("loadgen: call {idx}: no peer: {err}"),
            },
            Control::Answer { idx, sdp } => {
                if let Some(Some(peer)) = self.peers.get_mut(idx) {
                    let pending = peer.pending.take();
                    let applied = fakes::whatsapp_peer::apply_answer(&mut peer.rtc, pending, &sdp);
                    if let Err(err) = applied {
                        peer.report.error = Some(format!("bad answer: {err}"));
                    }
                    self.drain(idx, None);
                }
            }
            Control::StopSending => {
                self.sending = false;
                self.sends.clear();
            }
            Control::Finish { reply } => {
                let calls = self
                    .peers
                    .iter_mut()
                    .map(|p| {
                        p.as_mut()
                            .map(|p| std::mem::take(&mut p.report))
                            .unwrap_or_default()
                    })
                    .collect();
                let _ = reply.send(Outcome {
                    calls,
                    rtt_us: std::mem::take(&mut self.rtt_us),
                    send_lag_us: std::mem::take(&mut self.send_lag_us),
                });
                return false;
            }
        }
        true
    }

    fn new_peer(&mut self, idx: usize) -> anyhow::Result<String> {
        let mut socket = UdpSocket::bind("127.0.0.1:0".parse()?)?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
        let local = socket.local_addr()?;
        self.poll
            .registry()
            .register(&mut socket, Token(idx), Interest::READABLE)?;
        let now = Instant::now();
        let mut rtc = fakes::whatsapp_peer::whatsapp_rtc(now);
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let (mid, pending, offer) = fakes::whatsapp_peer::offer(&mut rtc);
        if self.peers.len() <= idx {
            self.peers.resize_with(idx + 1, || None);
        }
        self.peers[idx] = Some(Peer {
            rtc,
            socket,
            local,
            mid: Some(mid),
            pending: Some(pending),
            scheduled: None,
            seq: 0,
            rtp_time: 0,
            echoed: Vec::new(),
            report: CallReport::default(),
        });
        self.drain(idx, None);
        Ok(offer)
    }

    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, idx))) = self.sends.peek() {
            if at > now {
                break;
            }
            self.sends.pop();
            let lag = now.saturating_duration_since(at);
            self.send_lag_us
                .push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
            let Some(Some(peer)) = self.peers.get_mut(idx) else {
                continue;
            };
            let Some(mid) = peer.mid else { continue };
            peer.seq += 1;
            peer.rtp_time = peer.rtp_time.wrapping_add(960);
            let mut payload = [0u8; PAYLOAD_BYTES];
            payload[0] = OPUS_TOC;
            payload[1..5].copy_from_slice(&MAGIC.to_be_bytes());
            payload[5..9].copy_from_slice(&u32::try_from(idx).unwrap_or(u32::MAX).to_be_bytes());
            payload[9..17].copy_from_slice(&peer.seq.to_be_bytes());
            payload[17..25].copy_from_slice(&realtime_ns().to_be_bytes());
            if let Some(stream) = peer.rtc.direct_api().stream_tx_by_mid(mid, None) {
                let seq: SeqNo = peer.seq.into();
                stream.write_rtp(RtpWrite::new(
                    Pt::new_with_value(111),
                    seq,
                    peer.rtp_time,
                    now,
                    payload.to_vec(),
                ));
                peer.report.sent += 1;
            }
            self.drain(idx, None);
            // The next frame, on this call's schedule (not from now: lateness does not add up).
            self.sends.push(Reverse((at + FRAME, idx)));
        }
    }

    fn time_out_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, idx))) = self.timeouts.peek() {
            if at > now {
                break;
            }
            self.timeouts.pop();
            let Some(Some(peer)) = self.peers.get_mut(idx) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue;
            }
            peer.scheduled = None;
            let _ = peer.rtc.handle_input(Input::Timeout(now));
            self.drain(idx, None);
        }
    }

    fn read(&mut self, idx: usize, buf: &mut [u8]) {
        loop {
            let Some(Some(peer)) = self.peers.get_mut(idx) else {
                return;
            };
            let (n, source, received_ns) = match receive(&peer.socket, buf) {
                Ok(received) => received,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            if let Ok(datagram) = Receive::new(Protocol::Udp, source, peer.local, &buf[..n]) {
                let _ = peer
                    .rtc
                    .handle_input(Input::Receive(Instant::now(), datagram));
            }
            self.drain(idx, Some(received_ns));
        }
    }

    /// Carries out the peer's outputs; `received_ns` is the kernel time of the datagram just
    /// handled (its echo, if any, comes out here).
    fn drain(&mut self, idx: usize, received_ns: Option<u64>) {
        let Some(Some(peer)) = self.peers.get_mut(idx) else {
            return;
        };
        // str0m releases a packet just written at a timeout "now": feed it at once (as the
        // bridge's engine does), or the packet would wait for this thread's next timer and
        // that wait would count as the bridge's round trip.
        let now = Instant::now();
        let mut immediate = 4;
        loop {
            match peer.rtc.poll_output() {
                Ok(Output::Timeout(at)) if at <= now && immediate > 0 => {
                    immediate -= 1;
                    let _ = peer.rtc.handle_input(Input::Timeout(now));
                }
                Ok(Output::Timeout(at)) => {
                    if peer.scheduled.is_none_or(|s| at < s) {
                        peer.scheduled = Some(at);
                        self.timeouts.push(Reverse((at, idx)));
                    }
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    let _ = peer
                        .socket
                        .send_to(&transmit.contents, transmit.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    let now = Instant::now();
                    peer.report.connected_at = Some(now);
                    if self.sending {
                        // Calls spread evenly over the 20 ms frame.
                        let slot = FRAME * u32::try_from(idx % self.calls).unwrap_or(0)
                            / u32::try_from(self.calls).unwrap_or(1);
                        self.sends.push(Reverse((now + slot, idx)));
                    }
                }
                Ok(Output::Event(Event::RtpPacket(packet))) => {
                    let p = &packet.payload;
                    if p.len() < 25 || p[1..5] != MAGIC.to_be_bytes() {
                        continue;
                    }
                    let from = u32::from_be_bytes([p[5], p[6], p[7], p[8]]) as usize;
                    if from != idx {
                        peer.report.misrouted += 1;
                        continue;
                    }
                    let seq = u64::from_be_bytes(p[9..17].try_into().unwrap_or([0; 8]));
                    let sent_ns = u64::from_be_bytes(p[17..25].try_into().unwrap_or([0; 8]));
                    let (word, bit) = ((seq / 64) as usize, seq % 64);
                    if peer.echoed.len() <= word {
                        peer.echoed.resize(word + 1, 0);
                    }
                    if peer.echoed[word] & (1 << bit) != 0 {
                        peer.report.duplicates += 1;
                        continue;
                    }
                    peer.echoed[word] |= 1 << bit;
                    peer.report.echoed += 1;
                    peer.report.first_echo_at.get_or_insert_with(Instant::now);
                    let received = received_ns.unwrap_or_else(realtime_ns);
                    let rtt = received.saturating_sub(sent_ns) / 1000;
                    self.rtt_us.push(u32::try_from(rtt).unwrap_or(u32::MAX));
                }
                Ok(Output::Event(_)) => {}
                Err(err) => {
                    peer.report.error.get_or_insert_with(|| err.to_string());
                    return;
                }
            }
        }
    }
}

/// One datagram with the kernel's receive time (ns since the epoch).
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr, u64)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(TimeSpec);
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(std::io::Error::from)?;
    let mut at = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                let ns = i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec());
                at = u64::try_from(ns).ok();
            }
        }
    }
    let source = msg
        .address
        .map(|a| SocketAddr::V4(SocketAddrV4::new(a.ip(), a.port())))
        .ok_or_else(|| std::io::Error::new(ErrorKind::InvalidData, "no source address"))?;
    Ok((msg.bytes, source, at.unwrap_or_else(realtime_ns)))
}

/// Now, as ns since the epoch: the clock the kernel stamps datagrams with.
fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
