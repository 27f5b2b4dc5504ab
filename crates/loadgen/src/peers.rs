//! The peers: one thread, one `mio` poll, one UDP socket and one str0m `Rtc` per leg. The
//! callers play WhatsApp's media servers (ice-lite, WhatsApp's offer, RTP mode); with
//! `--model` the same thread also plays OpenAI's end of every model leg the bridge opens
//! ([`crate::models`]).
//!
//! ```text
//! main (tokio) ──Control::{Offer, Answer, ModelOffer, Steady, StopSending, Finish}──▶ peers thread
//!                                                     ◀──▶ N caller sockets (+ N model sockets)
//! ```
//!
//! Every connected call sends one 80-byte Opus packet per 20 ms, its calls spread over the 20 ms
//! (a 1 ms slot each), so the load is smooth. Each payload carries the call, a sequence number and
//! the send time; the echo comes back untouched, and its kernel receive timestamp
//! (`SO_TIMESTAMPNS`) minus the send time is the round trip through the bridge, without the time
//! this thread took to get round to reading it. A model peer that echoes a packet writes its
//! own kernel receive time and its send time into it, so each relay (caller → model, model →
//! caller) is measured on its own, without the model peer's time.
//!
//! One thread for both sides, not two: on the 2-core machine the bridge's media thread then
//! never waits behind two busy generator threads, and the generator's work that delays an echo
//! (the model peer's) is measured and left out of the relay figures.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{ErrorKind, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fakes::realtime_peer::MODEL_AUDIO_MARKER;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use nix::sys::time::TimeSpec;
use str0m::change::SdpPendingOffer;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};
use tokio::sync::oneshot;

use crate::models::{ModelPeer, ModelReport};

/// Opus TOC byte: SILK wideband, 20 ms, mono.
const OPUS_TOC: u8 = 0x48;
const MAGIC: u32 = 0x4C4F_4144; // "LOAD"
const PAYLOAD_BYTES: usize = 80;
const FRAME: Duration = Duration::from_millis(20);
const WAKE: Token = Token(usize::MAX);
/// Model peers' tokens start here (callers' are their call index).
const MODEL_TOKENS: usize = 1 << 30;

/// Where the fields of a caller's payload are. A model peer fills in `MODEL_RX` and `MODEL_TX`
/// when it echoes the packet (zero otherwise).
pub(crate) mod layout {
    use std::ops::Range;
    pub const CALL: Range<usize> = 5..9;
    pub const SEQ: Range<usize> = 9..17;
    /// When the caller wrote it (ns since the epoch).
    pub const SENT: Range<usize> = 17..25;
    /// The model peer's kernel receive time.
    pub const MODEL_RX: Range<usize> = 25..33;
    /// When the model peer wrote the echo.
    pub const MODEL_TX: Range<usize> = 33..41;
}

/// What the main thread asks of the peers.
pub enum Control {
    /// Start call `idx`: a new caller and its offer.
    Offer {
        idx: usize,
        reply: oneshot::Sender<String>,
    },
    /// The bridge's answer for call `idx` (from `pre_accept` or `accept`).
    Answer { idx: usize, sdp: String },
    /// A model leg's offer (the bridge's `POST /realtime/calls`): a new model peer and its
    /// answer.
    ModelOffer {
        offer: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Every call is up: the steady window starts.
    Steady,
    /// Stop sending audio (still receive the last echoes); the steady window ends.
    StopSending,
    /// Hand over what was measured and stop.
    Finish { reply: oneshot::Sender<Outcome> },
}

/// What one call saw.
#[derive(Debug, Default, Clone)]
pub struct CallReport {
    pub connected_at: Option<Instant>,
    pub first_echo_at: Option<Instant>,
    /// The kernel's receive time of the first packet of the model's greeting (`--model`; ns
    /// since the epoch, so this thread's own delay is not counted).
    pub first_model_audio_ns: Option<u64>,
    /// Greeting packets received.
    pub model_audio: u64,
    pub sent: u64,
    /// Distinct packets echoed back.
    pub echoed: u64,
    pub duplicates: u64,
    /// Echoes carrying another call's packets (cross-talk).
    pub misrouted: u64,
    pub error: Option<String>,
}

/// Everything measured; times in microseconds.
pub struct Outcome {
    pub calls: Vec<CallReport>,
    /// One model peer per model leg the bridge opened, in order.
    pub models: Vec<ModelReport>,
    /// Round trips (with `--model`: only packets sent once the call's greeting had arrived,
    /// i.e. with the model leg up and the call answered; earlier ones wait in the bridge by
    /// design).
    pub rtt_us: Vec<u32>,
    /// With `--model`, per echoed packet: caller → model peer (first relay)...
    pub to_model_us: Vec<u32>,
    /// ... model peer → caller (second relay) ...
    pub to_caller_us: Vec<u32>,
    /// ... and the model peer's own time (its kernel receive → echo written).
    pub model_hold_us: Vec<u32>,
    /// How late the sender ran against its 20 ms schedule.
    pub send_lag_us: Vec<u32>,
    /// The samples taken in the steady window: indexes into `rtt_us` (and, with `--model`,
    /// the relay and hold samples, taken together with it).
    pub steady: std::ops::Range<usize>,
}

/// The main thread's handle on the peers thread.
pub struct Peers {
    control: std_mpsc::Sender<Control>,
    waker: Arc<Waker>,
}

impl Peers {
    /// Starts the thread, for `calls` calls (callers and, with `model`, their model legs).
    pub fn start(calls: usize, model: bool) -> anyhow::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (control, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("peers".into())
            .spawn(move || Driver::new(poll, rx, calls.max(1), model).run())?;
        Ok(Self { control, waker })
    }

    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
        let _ = self.waker.wake();
    }
}

/// A peer's WebRTC side: its `Rtc` on its own socket.
pub(crate) struct Io {
    pub rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// The timeout queued for it in the driver's heap.
    scheduled: Option<Instant>,
}

impl Io {
    /// A socket on loopback (with kernel receive timestamps), registered as `token`, and the
    /// `Rtc` built for it, with its host candidate.
    pub(crate) fn bind(
        registry: &Registry,
        token: Token,
        build: impl FnOnce(Instant) -> Rtc,
    ) -> anyhow::Result<Self> {
        let mut socket = UdpSocket::bind("127.0.0.1:0".parse()?)?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
        let local = socket.local_addr()?;
        registry.register(&mut socket, token, Interest::READABLE)?;
        let mut rtc = build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok(Self {
            rtc,
            socket,
            local,
            scheduled: None,
        })
    }

    /// Drains the `Rtc` to its timeout: sends what it transmits, queues the timeout under
    /// `leg`, and keeps its events in `events` for the peer to act on afterwards.
    fn drain(
        &mut self,
        leg: Leg,
        timeouts: &mut BinaryHeap<Reverse<(Instant, Leg)>>,
        events: &mut Vec<Event>,
    ) -> Result<(), RtcError> {
        // str0m releases a packet just written at a timeout "now": feed it at once (as the
        // bridge's engine does), or the packet would wait for this thread's next timer and
        // that wait would count as the bridge's round trip.
        let now = Instant::now();
        let mut immediate = 4;
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(at) if at <= now && immediate > 0 => {
                    immediate -= 1;
                    self.rtc.handle_input(Input::Timeout(now))?;
                }
                Output::Timeout(at) => {
                    if self.scheduled.is_none_or(|s| at < s) {
                        self.scheduled = Some(at);
                        timeouts.push(Reverse((at, leg)));
                    }
                    return Ok(());
                }
                Output::Transmit(transmit) => {
                    let _ = self
                        .socket
                        .send_to(&transmit.contents, transmit.destination);
                }
                Output::Event(event) => events.push(event),
            }
        }
    }
}

/// Which peer: a call's caller, or the nth model peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Leg {
    Caller(usize),
    Model(usize),
}

impl Leg {
    fn from_token(token: Token) -> Self {
        match token.0.checked_sub(MODEL_TOKENS) {
            Some(n) => Leg::Model(n),
            None => Leg::Caller(token.0),
        }
    }
}

struct Caller {
    io: Io,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    seq: u64,
    rtp_time: u32,
    echoed: Vec<u64>,
    report: CallReport,
}

struct Driver {
    poll: Poll,
    calls: usize,
    model: bool,
    control: std_mpsc::Receiver<Control>,
    callers: Vec<Option<Caller>>,
    models: Vec<ModelPeer>,
    timeouts: BinaryHeap<Reverse<(Instant, Leg)>>,
    sends: BinaryHeap<Reverse<(Instant, usize)>>,
    sending: bool,
    /// Where the steady window starts and ends in the samples.
    steady_from: usize,
    steady_to: Option<usize>,
    /// Events of the `Rtc` being drained (kept to reuse the allocation).
    events: Vec<Event>,
    rtt_us: Vec<u32>,
    to_model_us: Vec<u32>,
    to_caller_us: Vec<u32>,
    model_hold_us: Vec<u32>,
    send_lag_us: Vec<u32>,
}

impl Driver {
    fn new(poll: Poll, control: std_mpsc::Receiver<Control>, calls: usize, model: bool) -> Self {
        let samples = |on: bool| Vec::with_capacity(if on { 1 << 20 } else { 0 });
        Self {
            poll,
            calls,
            model,
            control,
            callers: Vec::new(),
            models: Vec::new(),
            timeouts: BinaryHeap::new(),
            sends: BinaryHeap::new(),
            sending: true,
            steady_from: 0,
            steady_to: None,
            events: Vec::new(),
            rtt_us: samples(true),
            to_model_us: samples(model),
            to_caller_us: samples(model),
            model_hold_us: samples(model),
            send_lag_us: samples(true),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            self.send_due(now);
            self.time_out_due(now);
            let next = [
                self.sends.peek().map(|Reverse((at, _))| *at),
                self.timeouts.peek().map(|Reverse((at, _))| *at),
            ]
            .into_iter()
            .flatten()
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
                    eprintln!("loadgen: peers poll failed: {err}");
                    return;
                }
            }
            for event in &events {
                if event.token() == WAKE {
                    continue;
                }
                self.read(Leg::from_token(event.token()), &mut buf);
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
            Control::Offer { idx, reply } => match self.new_caller(idx) {
                Ok(offer) => {
                    let _ = reply.send(offer);
                }
                Err(err) => eprintln!("loadgen: call {idx}: no peer: {err}"),
            },
            Control::Answer { idx, sdp } => {
                if let Some(Some(caller)) = self.callers.get_mut(idx) {
                    let pending = caller.pending.take();
                    let applied =
                        fakes::whatsapp_peer::apply_answer(&mut caller.io.rtc, pending, &sdp);
                    if let Err(err) = applied {
                        caller.report.error = Some(format!("bad answer: {err}"));
                    }
                    self.drain(Leg::Caller(idx), None);
                }
            }
            Control::ModelOffer { offer, reply } => {
                let idx = self.models.len();
                let token = Token(MODEL_TOKENS + idx);
                match ModelPeer::answer(self.poll.registry(), token, &offer) {
                    Ok((model, answer)) => {
                        self.models.push(model);
                        self.drain(Leg::Model(idx), None);
                        let _ = reply.send(Ok(answer));
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err.to_string()));
                    }
                }
            }
            Control::Steady => self.steady_from = self.rtt_us.len(),
            Control::StopSending => {
                self.sending = false;
                self.sends.clear();
                self.steady_to = Some(self.rtt_us.len());
            }
            Control::Finish { reply } => {
                let calls = self
                    .callers
                    .iter_mut()
                    .map(|c| {
                        c.as_mut()
                            .map(|c| std::mem::take(&mut c.report))
                            .unwrap_or_default()
                    })
                    .collect();
                let models = self.models.iter().map(ModelPeer::report).collect();
                let steady_to = self.steady_to.unwrap_or(self.rtt_us.len());
                let _ = reply.send(Outcome {
                    calls,
                    models,
                    rtt_us: std::mem::take(&mut self.rtt_us),
                    to_model_us: std::mem::take(&mut self.to_model_us),
                    to_caller_us: std::mem::take(&mut self.to_caller_us),
                    model_hold_us: std::mem::take(&mut self.model_hold_us),
                    send_lag_us: std::mem::take(&mut self.send_lag_us),
                    steady: self.steady_from.min(steady_to)..steady_to,
                });
                return false;
            }
        }
        true
    }

    fn new_caller(&mut self, idx: usize) -> anyhow::Result<String> {
        let mut io = Io::bind(
            self.poll.registry(),
            Token(idx),
            fakes::whatsapp_peer::whatsapp_rtc,
        )?;
        let (mid, pending, offer) = fakes::whatsapp_peer::offer(&mut io.rtc);
        if self.callers.len() <= idx {
            self.callers.resize_with(idx + 1, || None);
        }
        self.callers[idx] = Some(Caller {
            io,
            mid: Some(mid),
            pending: Some(pending),
            seq: 0,
            rtp_time: 0,
            echoed: Vec::new(),
            report: CallReport::default(),
        });
        self.drain(Leg::Caller(idx), None);
        Ok(offer)
    }

    fn io_mut(&mut self, leg: Leg) -> Option<&mut Io> {
        match leg {
            Leg::Caller(idx) => self.callers.get_mut(idx)?.as_mut().map(|c| &mut c.io),
            Leg::Model(idx) => self.models.get_mut(idx).map(ModelPeer::io_mut),
        }
    }

    fn send_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, idx))) = self.sends.peek() {
            if at > now {
                break;
            }
            self.sends.pop();
            let lag = now.saturating_duration_since(at);
            self.send_lag_us.push(us(lag.as_nanos()));
            let Some(Some(caller)) = self.callers.get_mut(idx) else {
                continue;
            };
            let Some(mid) = caller.mid else { continue };
            caller.seq += 1;
            caller.rtp_time = caller.rtp_time.wrapping_add(960);
            let mut payload = [0u8; PAYLOAD_BYTES];
            payload[0] = OPUS_TOC;
            payload[1..5].copy_from_slice(&MAGIC.to_be_bytes());
            payload[layout::CALL]
                .copy_from_slice(&u32::try_from(idx).unwrap_or(u32::MAX).to_be_bytes());
            payload[layout::SEQ].copy_from_slice(&caller.seq.to_be_bytes());
            payload[layout::SENT].copy_from_slice(&realtime_ns().to_be_bytes());
            if let Some(stream) = caller.io.rtc.direct_api().stream_tx_by_mid(mid, None) {
                let seq: SeqNo = caller.seq.into();
                stream.write_rtp(RtpWrite::new(
                    Pt::new_with_value(111),
                    seq,
                    caller.rtp_time,
                    now,
                    payload.to_vec(),
                ));
                caller.report.sent += 1;
            }
            self.drain(Leg::Caller(idx), None);
            // The next frame, on this call's schedule (not from now: lateness does not add up).
            self.sends.push(Reverse((at + FRAME, idx)));
        }
    }

    fn time_out_due(&mut self, now: Instant) {
        while let Some(&Reverse((at, leg))) = self.timeouts.peek() {
            if at > now {
                break;
            }
            self.timeouts.pop();
            let Some(io) = self.io_mut(leg) else {
                continue;
            };
            if io.scheduled != Some(at) {
                continue;
            }
            io.scheduled = None;
            let _ = io.rtc.handle_input(Input::Timeout(now));
            self.drain(leg, None);
        }
    }

    fn read(&mut self, leg: Leg, buf: &mut [u8]) {
        loop {
            let Some(io) = self.io_mut(leg) else {
                return;
            };
            let (n, source, received_ns) = match receive(&io.socket, buf) {
                Ok(received) => received,
                Err(err) if err.kind() == ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            if let Ok(datagram) = Receive::new(Protocol::Udp, source, io.local, &buf[..n]) {
                let _ = io
                    .rtc
                    .handle_input(Input::Receive(Instant::now(), datagram));
            }
            self.drain(leg, Some(received_ns));
        }
    }

    /// Drains the peer's `Rtc` and acts on its events, until it has nothing more to do;
    /// `received_ns` is the kernel time of the datagram just handled (the echo it carries, if
    /// any, comes out here).
    fn drain(&mut self, leg: Leg, received_ns: Option<u64>) {
        let mut events = std::mem::take(&mut self.events);
        while self.drain_once(leg, received_ns, &mut events) {}
        events.clear();
        self.events = events;
    }

    /// One pass of [`Driver::drain`]; true when the peer wrote something in answer to its
    /// events, so its `Rtc` must be drained again.
    fn drain_once(&mut self, leg: Leg, received_ns: Option<u64>, events: &mut Vec<Event>) -> bool {
        match leg {
            Leg::Caller(idx) => {
                let Some(Some(caller)) = self.callers.get_mut(idx) else {
                    return false;
                };
                if let Err(err) = caller.io.drain(leg, &mut self.timeouts, events) {
                    caller.report.error.get_or_insert_with(|| err.to_string());
                }
                self.caller_events(idx, events, received_ns);
                // A caller's events never call for a write.
                false
            }
            Leg::Model(idx) => {
                let Some(model) = self.models.get_mut(idx) else {
                    return false;
                };
                match model.io_mut().drain(leg, &mut self.timeouts, events) {
                    Ok(()) => model.on_events(events, received_ns),
                    Err(err) => {
                        model.failed(err.to_string());
                        events.clear();
                        false
                    }
                }
            }
        }
    }

    /// Acts on caller `idx`'s events: starts streaming once connected, checks every echo and
    /// notes the model's greeting.
    fn caller_events(&mut self, idx: usize, events: &mut Vec<Event>, received_ns: Option<u64>) {
        let Some(Some(caller)) = self.callers.get_mut(idx) else {
            return;
        };
        for event in events.drain(..) {
            if matches!(event, Event::Connected) {
                caller.report.connected_at = Some(Instant::now());
                if self.sending {
                    // Calls spread evenly over the 20 ms frame.
                    let slot = FRAME * u32::try_from(idx % self.calls).unwrap_or(0)
                        / u32::try_from(self.calls).unwrap_or(1);
                    self.sends.push(Reverse((Instant::now() + slot, idx)));
                }
                continue;
            }
            let Event::RtpPacket(packet) = event else {
                continue;
            };
            let received = received_ns.unwrap_or_else(realtime_ns);
            let p = &packet.payload;
            if p.starts_with(&MODEL_AUDIO_MARKER) {
                caller.report.model_audio += 1;
                caller.report.first_model_audio_ns.get_or_insert(received);
                continue;
            }
            if p.len() < PAYLOAD_BYTES || p[1..5] != MAGIC.to_be_bytes() {
                continue;
            }
            let from = field(p, layout::CALL) as usize;
            if from != idx {
                caller.report.misrouted += 1;
                continue;
            }
            let seq = field(p, layout::SEQ);
            let (word, bit) = ((seq / 64) as usize, seq % 64);
            if caller.echoed.len() <= word {
                caller.echoed.resize(word + 1, 0);
            }
            if caller.echoed[word] & (1 << bit) != 0 {
                caller.report.duplicates += 1;
                continue;
            }
            caller.echoed[word] |= 1 << bit;
            caller.report.echoed += 1;
            caller.report.first_echo_at.get_or_insert_with(Instant::now);
            let sent = field(p, layout::SENT);
            if !self.model {
                self.rtt_us.push(us(received.saturating_sub(sent).into()));
                continue;
            }
            // Round trips count from packets sent once the greeting arrived (see `Outcome`).
            if caller
                .report
                .first_model_audio_ns
                .is_none_or(|up| sent < up)
            {
                continue;
            }
            let (model_rx, model_tx) = (field(p, layout::MODEL_RX), field(p, layout::MODEL_TX));
            self.rtt_us.push(us(received.saturating_sub(sent).into()));
            self.to_model_us
                .push(us(model_rx.saturating_sub(sent).into()));
            self.to_caller_us
                .push(us(received.saturating_sub(model_tx).into()));
            self.model_hold_us
                .push(us(model_tx.saturating_sub(model_rx).into()));
        }
    }
}

/// The big-endian number in `p[range]` (up to 8 bytes).
fn field(p: &[u8], range: std::ops::Range<usize>) -> u64 {
    p[range].iter().fold(0, |n, b| n << 8 | u64::from(*b))
}

/// Nanoseconds as whole microseconds.
fn us(ns: u128) -> u32 {
    u32::try_from(ns / 1000).unwrap_or(u32::MAX)
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
pub(crate) fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
