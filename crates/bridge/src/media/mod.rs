//! The media shell: one UDP socket and one thread that owns the sans-IO [`call_core::Engine`]
//! and carries out what it decides.
//!
//! ```text
//! calls (signalling) ──Media::{accept_offer, create_offer, ...}──▶ media thread ◀──▶ UDP socket
//!        ▲                                                          │ owns Engine
//!        └───────────── MediaEvent (connected, DTMF, ended, ...) ───┘
//! ```
//!
//! The thread is the only owner of the engine and the socket; signalling talks to it over a
//! channel (and a `mio` waker), so no lock is ever held around media. Every call's media goes
//! through the one socket (`RTC_UDP_PORT`), demultiplexed by the engine.
//!
//! Why a thread of its own rather than a tokio task: it waits in one `epoll` for datagrams,
//! commands and the engine's next deadline, with no scheduler hop per packet and no timer
//! re-armed per loop; and audio never queues behind webhook bursts or database work on the
//! runtime's workers.

pub mod batch;
pub mod stun;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use call_core::{
    AgentKind, CallError, CallEvent, CallHandle, CallStats, EndReason, Engine, EngineConfig, Output,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};

use crate::domain::CallChannel;
use crate::telemetry::Metrics;

/// Where the media socket is and how calls are timed.
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// The address calls' host candidate advertises (a concrete IP).
    pub host_ip: IpAddr,
    /// The public address, when behind NAT 1:1 (from `RTC_PUBLIC_IP` or STUN).
    pub public_ip: Option<IpAddr>,
    /// Engine timers.
    pub connect_timeout: Duration,
    /// Engine timers.
    pub media_timeout: Duration,
    /// Engine timers.
    pub max_call_length: Duration,
    /// Engine timers.
    pub ring_timeout: Duration,
    /// Ask for real-time scheduling for the media thread (`RTC_REALTIME_PRIORITY`).
    pub realtime_priority: bool,
    /// Decrypt incoming audio in the engine (`RTC_FAST_RECEIVE`).
    pub fast_receive: bool,
    /// Encrypt and send outgoing audio in the engine (`RTC_FAST_SEND`).
    pub fast_send: bool,
}

/// Something the engine said about a call.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaEvent {
    /// The call.
    pub call: CallHandle,
    /// What happened.
    pub event: CallEvent,
}

enum Command {
    AcceptOffer {
        offer: String,
        from: CallChannel,
        agent: AgentKind,
        reply: oneshot::Sender<Result<(CallHandle, String), CallError>>,
    },
    CreateOffer {
        agent: AgentKind,
        reply: oneshot::Sender<Result<(CallHandle, String), CallError>>,
    },
    AcceptAnswer {
        call: CallHandle,
        answer: String,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    StartMedia {
        call: CallHandle,
    },
    HangUp {
        call: CallHandle,
        reason: EndReason,
    },
    OfferModelLeg {
        call: CallHandle,
        reply: oneshot::Sender<Result<String, CallError>>,
    },
    AcceptModelAnswer {
        call: CallHandle,
        answer: String,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    SendModelMessage {
        call: CallHandle,
        text: String,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    DropModelLeg {
        call: CallHandle,
        reason: EndReason,
    },
}

/// Why the media task did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The engine refused.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The media task is gone (shutting down).
    #[error("the media engine has stopped")]
    Stopped,
}

/// The handle signalling uses to reach the media thread. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Media {
    // Declared before `wake`: the last handle drops its sender first, then wakes the thread,
    // which then finds the channel closed and stops.
    commands: mpsc::Sender<Command>,
    wake: Arc<WakeOnDrop>,
    local: SocketAddr,
}

/// Wakes the media thread when the last [`Media`] handle goes.
#[derive(Debug)]
struct WakeOnDrop(Arc<Waker>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        let _ = self.0.wake();
    }
}

/// The running media thread.
#[derive(Debug)]
pub struct MediaThread {
    stopped: oneshot::Receiver<()>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl MediaThread {
    /// Waits until the thread has stopped (after every [`Media`] handle is dropped, or
    /// [`MediaThread::stop`]).
    pub async fn join(&mut self) {
        let _ = (&mut self.stopped).await;
    }

    /// Stops the thread now, without waiting for the handles to go.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
    }
}

impl Media {
    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Answers an inbound call's offer, read as the channel's peer makes them (WhatsApp's
    /// ice-lite offers, or a browser's full-ICE ones): the call and our SDP answer.
    ///
    /// # Errors
    /// A broken offer, or a stopped engine.
    pub async fn accept_offer(
        &self,
        offer: &str,
        from: CallChannel,
        agent: AgentKind,
    ) -> Result<(CallHandle, String), MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AcceptOffer {
            offer: offer.to_owned(),
            from,
            agent,
            reply,
        })
        .await?;
        Ok(answer.await.map_err(|_| MediaError::Stopped)??)
    }

    /// Creates an outbound call's offer.
    ///
    /// # Errors
    /// A stopped engine.
    pub async fn create_offer(&self, agent: AgentKind) -> Result<(CallHandle, String), MediaError> {
        let (reply, offer) = oneshot::channel();
        self.send(Command::CreateOffer { agent, reply }).await?;
        Ok(offer.await.map_err(|_| MediaError::Stopped)??)
    }

    /// Applies an outbound call's answer.
    ///
    /// # Errors
    /// A broken answer, a call not waiting for one, or a stopped engine.
    pub async fn accept_answer(&self, call: CallHandle, answer: &str) -> Result<(), MediaError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::AcceptAnswer {
            call,
            answer: answer.to_owned(),
            reply,
        })
        .await?;
        Ok(done.await.map_err(|_| MediaError::Stopped)??)
    }

    /// The call was answered: the agent starts.
    pub async fn start_media(&self, call: CallHandle) {
        let _ = self.send(Command::StartMedia { call }).await;
    }

    /// Ends a call's media.
    pub async fn hang_up(&self, call: CallHandle, reason: EndReason) {
        let _ = self.send(Command::HangUp { call, reason }).await;
    }

    /// Offers the call a model leg: the SDP offer for the model's WebRTC endpoint.
    ///
    /// # Errors
    /// A call that is gone, has a model leg, or is not answered by the model; a stopped engine.
    pub async fn offer_model_leg(&self, call: CallHandle) -> Result<String, MediaError> {
        let (reply, offer) = oneshot::channel();
        self.send(Command::OfferModelLeg { call, reply }).await?;
        Ok(offer.await.map_err(|_| MediaError::Stopped)??)
    }

    /// Applies the model endpoint's answer.
    ///
    /// # Errors
    /// A broken answer, no model leg waiting for one, or a stopped engine.
    pub async fn accept_model_answer(
        &self,
        call: CallHandle,
        answer: &str,
    ) -> Result<(), MediaError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::AcceptModelAnswer {
            call,
            answer: answer.to_owned(),
            reply,
        })
        .await?;
        Ok(done.await.map_err(|_| MediaError::Stopped)??)
    }

    /// Sends a JSON event on the model's event channel.
    ///
    /// # Errors
    /// No open channel, a full one, or a stopped engine.
    pub async fn send_model_message(
        &self,
        call: CallHandle,
        text: String,
    ) -> Result<(), MediaError> {
        let (reply, done) = oneshot::channel();
        self.send(Command::SendModelMessage { call, text, reply })
            .await?;
        Ok(done.await.map_err(|_| MediaError::Stopped)??)
    }

    /// Drops the call's model leg; the call goes on.
    pub async fn drop_model_leg(&self, call: CallHandle, reason: EndReason) {
        let _ = self.send(Command::DropModelLeg { call, reason }).await;
    }

    async fn send(&self, command: Command) -> Result<(), MediaError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MediaError::Stopped)?;
        self.wake.0.wake().map_err(|_| MediaError::Stopped)
    }
}

/// Binds the media socket: `bind` is `RTC_BIND_ADDRESS:RTC_UDP_PORT`.
///
/// # Errors
/// When the port is taken.
pub fn bind(bind: SocketAddr) -> std::io::Result<StdUdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Hundreds of calls share this socket: the default buffers (~200 KB) hold a few
    // milliseconds of their traffic. Ask for more; the kernel caps it at net.core.*mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What the media socket asks for as receive and send buffers.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// The IP this host uses to reach the internet: what a wildcard-bound socket's host candidate
/// should say. Found by "connecting" a UDP socket (no packet is sent).
pub fn route_ip() -> Option<IpAddr> {
    let probe = StdUdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    probe
        .local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

/// Starts the media thread on `socket`. It stops when every [`Media`] handle is dropped (or
/// on [`MediaThread::stop`]), after hanging up the calls it still holds.
///
/// # Errors
/// When the socket cannot be polled or the thread cannot start.
pub fn spawn(
    socket: StdUdpSocket,
    settings: &MediaSettings,
    metrics: Metrics,
) -> std::io::Result<(Media, mpsc::UnboundedReceiver<MediaEvent>, MediaThread)> {
    socket.set_nonblocking(true)?;
    let mut socket = UdpSocket::from_std(socket);
    let bound = socket.local_addr()?;
    let host = SocketAddr::new(settings.host_ip, bound.port());
    let mut config = EngineConfig::new(host);
    config.public = settings
        .public_ip
        .map(|ip| SocketAddr::new(ip, bound.port()));
    config.connect_timeout = settings.connect_timeout;
    config.media_timeout = settings.media_timeout;
    config.max_call_length = settings.max_call_length;
    config.ring_timeout = settings.ring_timeout;
    config.fast_receive = settings.fast_receive;
    config.fast_send = settings.fast_send;
    let engine = Engine::new(config, Instant::now());

    let poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (commands, command_rx) = mpsc::channel(256);
    // Events are few per call (connected, media, keys, quality every 5 s, ended) and must not
    // be dropped (an ended call must be recorded), so this channel is not bounded; the
    // consumer is the call registry, which does no waiting of its own.
    let (events, event_rx) = mpsc::unbounded_channel();
    let (stopped_tx, stopped) = oneshot::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let driver = Driver {
        engine,
        socket,
        poll,
        commands: command_rx,
        events,
        totals: Totals::new(&metrics),
        metrics,
        stop: stop.clone(),
    };
    let realtime = settings.realtime_priority;
    std::thread::Builder::new()
        .name("media".into())
        .spawn(move || {
            if realtime {
                raise_priority();
            }
            driver.run();
            let _ = stopped_tx.send(());
        })?;
    Ok((
        Media {
            commands,
            wake: Arc::new(WakeOnDrop(waker.clone())),
            local: host,
        },
        event_rx,
        MediaThread {
            stopped,
            stop,
            waker,
        },
    ))
}

/// Puts the calling thread under SCHED_FIFO at a low real-time priority: above every normal
/// thread (so a busy host does not hold audio up for a scheduler time slice), below the
/// kernel's own real-time threads. The thread blocks in epoll between packets, and the kernel
/// keeps 5 % of each second for normal threads (`sched_rt_runtime_us`) in any case.
fn raise_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    let result = ThreadPriorityValue::try_from(MEDIA_RT_PRIORITY)
        .map_err(|e| format!("{e:?}"))
        .and_then(|value| {
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Crossplatform(value),
                ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
            )
            .map_err(|e| format!("{e:?}"))
        });
    match result {
        Ok(()) => tracing::info!(
            priority = MEDIA_RT_PRIORITY,
            "call media thread runs at real-time priority (SCHED_FIFO)"
        ),
        Err(err) => tracing::warn!(
            error = %err,
            "RTC_REALTIME_PRIORITY=true but the system refused real-time scheduling; media runs at normal priority. Grant CAP_SYS_NICE (docker run --cap-add SYS_NICE, or systemd AmbientCapabilities=CAP_SYS_NICE)"
        ),
    }
}

/// SCHED_FIFO priority of the media thread (1–99; the kernel's own threads use 50 and up).
const MEDIA_RT_PRIORITY: u8 = 10;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

struct Driver {
    engine: Engine,
    socket: UdpSocket,
    poll: Poll,
    commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<MediaEvent>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    totals: Totals,
}

impl Driver {
    fn run(mut self) {
        let mut ready = Events::with_capacity(8);
        // Made here: their headers hold raw pointers, so they stay on this thread.
        let mut receiver = batch::Receiver::new();
        let mut sender = batch::Sender::new();
        // The socket is edge-triggered: after a full burst, read on without waiting.
        let mut more_to_read = false;
        // What the last wake-up did, and since when: timed until the thread waits again.
        let mut work = Work::default();
        let mut woke = Instant::now();
        loop {
            let deadline = self.drain(&mut sender);
            work.done(woke, &self.metrics);
            self.metrics
                .active_calls
                .set(i64::try_from(self.engine.active_calls()).unwrap_or(i64::MAX));
            self.totals.export(self.engine.totals());

            // mio rounds the wait up to epoll's milliseconds: timers fire up to 1 ms late,
            // which nothing here minds; audio goes out as soon as it comes in.
            let wait = if more_to_read {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            if let Err(err) = self.poll.poll(&mut ready, Some(wait)) {
                if err.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %err, "media poll failed; stopping call media");
                    break;
                }
            }
            woke = Instant::now();
            for event in &ready {
                if event.token() == SOCKET {
                    more_to_read = true;
                }
            }

            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            loop {
                match self.commands.try_recv() {
                    Ok(command) => {
                        work.commands += 1;
                        execute(&mut self.engine, command);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.shut_down(&mut sender);
                        return;
                    }
                }
            }
            if more_to_read {
                let (more, read) = self.receive_burst(&mut receiver);
                more_to_read = more;
                work.datagrams += read;
            }
            let now = Instant::now();
            if deadline <= now {
                work.timers = true;
                self.engine.handle_timeout(now);
            }
        }
        self.shut_down(&mut sender);
    }

    /// Reads what is waiting, up to a burst: whether more may be waiting, and how many were
    /// read. A burst that is not full emptied the queue, so no further read is spent learning
    /// that it is empty; a datagram arriving later raises the edge again.
    fn receive_burst(&mut self, receiver: &mut batch::Receiver) -> (bool, usize) {
        let now = Instant::now();
        let engine = &mut self.engine;
        match receiver.receive(&self.socket, |source, contents| {
            if !engine.handle_receive(now, source, contents) {
                tracing::trace!(%source, bytes = contents.len(), "datagram for no call");
            }
        }) {
            Ok(batch::Read::Datagrams(n)) => (n == batch::BURST, n),
            Ok(batch::Read::Empty) => (false, 0),
            // ICMP port unreachable from a peer that went away surfaces here on Linux; what
            // is queued behind it is read on the next turn.
            Err(err) => {
                tracing::debug!(error = %err, "media socket receive failed");
                (true, 0)
            }
        }
    }

    /// Ends what is left, politely, and lets the close datagrams out.
    fn shut_down(&mut self, sender: &mut batch::Sender) {
        self.engine.hang_up_all(Instant::now(), EndReason::HungUp);
        self.drain(sender);
        self.metrics.active_calls.set(0);
        tracing::debug!("media engine stopped");
    }

    /// Carries out the engine's outputs until it waits, the datagrams in batches; returns when
    /// it next needs time.
    fn drain(&mut self, sender: &mut batch::Sender) -> Instant {
        loop {
            match self.engine.poll_output() {
                Output::Timeout(at) => {
                    sender.flush(&self.socket);
                    return at;
                }
                Output::Transmit {
                    destination,
                    contents,
                } => sender.push(&self.socket, destination, contents),
                Output::Event(call, event) => {
                    if let CallEvent::Quality { loss, jitter } = &event {
                        if let Some(loss) = loss {
                            self.metrics.call_packet_loss.observe(f64::from(*loss));
                        }
                        self.metrics.call_jitter.observe(*jitter);
                    }
                    let _ = self.events.send(MediaEvent { call, event });
                }
            }
        }
    }
}

/// What one wake-up of the media thread did: timed from the wake-up until the thread waits
/// again, since every datagram arriving meanwhile waits that long.
#[derive(Default)]
struct Work {
    datagrams: usize,
    commands: usize,
    timers: bool,
}

/// A wake-up this long is held up audio; it is logged with what it did, to tell whether calls
/// being set up (commands, DTLS), bursts of datagrams or timers were the cause.
const LONG_WAKE_UP: Duration = Duration::from_millis(1);

impl Work {
    fn done(&mut self, woke: Instant, metrics: &Metrics) {
        let busy = woke.elapsed();
        metrics.media_loop_busy.observe(busy.as_secs_f64());
        if busy >= LONG_WAKE_UP {
            tracing::debug!(
                busy_us = busy.as_micros(),
                datagrams = self.datagrams,
                commands = self.commands,
                timers = self.timers,
                "the media thread was busy for a millisecond or more"
            );
        }
        *self = Self::default();
    }
}

/// The media counters, resolved once (a label lookup per loop would be work on the hot path),
/// and what the engine had counted when they were last brought up to date.
struct Totals {
    packets_in: IntCounter,
    packets_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    packets_in_fast: IntCounter,
    packets_out_fast: IntCounter,
    exported: CallStats,
}

impl Totals {
    fn new(metrics: &Metrics) -> Self {
        Self {
            packets_in: metrics.media_packets.with_label_values(&["in"]),
            packets_out: metrics.media_packets.with_label_values(&["out"]),
            bytes_in: metrics.media_bytes.with_label_values(&["in"]),
            bytes_out: metrics.media_bytes.with_label_values(&["out"]),
            packets_in_fast: metrics.media_packets_fast.with_label_values(&["in"]),
            packets_out_fast: metrics.media_packets_fast.with_label_values(&["out"]),
            exported: CallStats::default(),
        }
    }

    /// Adds what the engine counted since the last export.
    fn export(&mut self, totals: CallStats) {
        if totals == self.exported {
            return;
        }
        let before = self.exported;
        self.packets_in
            .inc_by(totals.packets_in.saturating_sub(before.packets_in));
        self.packets_out
            .inc_by(totals.packets_out.saturating_sub(before.packets_out));
        self.bytes_in
            .inc_by(totals.bytes_in.saturating_sub(before.bytes_in));
        self.bytes_out
            .inc_by(totals.bytes_out.saturating_sub(before.bytes_out));
        self.packets_in_fast.inc_by(
            totals
                .packets_in_fast
                .saturating_sub(before.packets_in_fast),
        );
        self.packets_out_fast.inc_by(
            totals
                .packets_out_fast
                .saturating_sub(before.packets_out_fast),
        );
        self.exported = totals;
    }
}

fn execute(engine: &mut Engine, command: Command) {
    let now = Instant::now();
    match command {
        Command::AcceptOffer {
            offer,
            from,
            agent,
            reply,
        } => {
            let _ = reply.send(match from {
                CallChannel::WhatsApp => engine.accept_offer(now, &offer, agent),
                CallChannel::TestPhone => engine.accept_browser_offer(now, &offer, agent),
            });
        }
        Command::CreateOffer { agent, reply } => {
            let _ = reply.send(engine.create_offer(now, agent));
        }
        Command::AcceptAnswer {
            call,
            answer,
            reply,
        } => {
            let _ = reply.send(engine.accept_answer(now, call, &answer));
        }
        Command::StartMedia { call } => {
            if let Err(err) = engine.start_media(now, call) {
                tracing::debug!(call = call.0, error = %err, "start media for a call that is gone");
            }
        }
        Command::HangUp { call, reason } => engine.hang_up(now, call, reason),
        Command::OfferModelLeg { call, reply } => {
            let _ = reply.send(engine.offer_model_leg(now, call));
        }
        Command::AcceptModelAnswer {
            call,
            answer,
            reply,
        } => {
            let _ = reply.send(engine.accept_model_answer(now, call, &answer));
        }
        Command::SendModelMessage { call, text, reply } => {
            let _ = reply.send(engine.send_model_message(now, call, &text));
        }
        Command::DropModelLeg { call, reason } => engine.drop_model_leg(now, call, reason),
    }
}
