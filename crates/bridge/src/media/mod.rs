//! The media shell: one UDP socket, one task that owns the sans-IO [`call_core::Engine`] and
//! carries out what it decides.
//!
//! ```text
//! calls (signalling) ──Media::{accept_offer, create_offer, ...}──▶ driver task ◀──▶ UDP socket
//!        ▲                                                          │ owns Engine
//!        └───────────── MediaEvent (connected, DTMF, ended, ...) ───┘
//! ```
//!
//! The driver is the only owner of the engine and the socket; signalling talks to it over a
//! channel, so no lock is ever held around media. Every call's media goes through the one
//! socket (`RTC_UDP_PORT`), demultiplexed by the engine.

pub mod stun;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::time::{Duration, Instant};

use call_core::{
    AgentKind, CallError, CallEvent, CallHandle, CallStats, EndReason, Engine, EngineConfig, Output,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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

/// The handle signalling uses to reach the media task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Media {
    commands: mpsc::Sender<Command>,
    local: SocketAddr,
}

impl Media {
    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Answers an inbound call's offer: the call and our SDP answer.
    ///
    /// # Errors
    /// A broken offer, or a stopped engine.
    pub async fn accept_offer(
        &self,
        offer: &str,
        agent: AgentKind,
    ) -> Result<(CallHandle, String), MediaError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::AcceptOffer {
            offer: offer.to_owned(),
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

    async fn send(&self, command: Command) -> Result<(), MediaError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MediaError::Stopped)
    }
}

/// Binds the media socket: `bind` is `RTC_BIND_ADDRESS:RTC_UDP_PORT`.
///
/// # Errors
/// When the port is taken.
pub fn bind(bind: SocketAddr) -> std::io::Result<StdUdpSocket> {
    let socket = StdUdpSocket::bind(bind)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

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

/// Starts the media task on `socket`. It stops when every [`Media`] handle is dropped, after
/// hanging up the calls it still holds.
///
/// # Errors
/// When the socket cannot be handed to tokio.
pub fn spawn(
    socket: StdUdpSocket,
    settings: &MediaSettings,
    metrics: Metrics,
) -> std::io::Result<(Media, mpsc::UnboundedReceiver<MediaEvent>, JoinHandle<()>)> {
    let socket = UdpSocket::from_std(socket)?;
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
    let engine = Engine::new(config, Instant::now());
    let (commands, command_rx) = mpsc::channel(256);
    // Events are few per call (connected, media, keys, quality every 5 s, ended) and must not
    // be dropped (an ended call must be recorded), so this channel is not bounded; the
    // consumer is the call registry, which does no waiting of its own.
    let (events, event_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(engine, socket, command_rx, events, metrics));
    Ok((
        Media {
            commands,
            local: host,
        },
        event_rx,
        task,
    ))
}

async fn run(
    mut engine: Engine,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::UnboundedSender<MediaEvent>,
    metrics: Metrics,
) {
    let mut buf = vec![0u8; 2048];
    let mut exported = CallStats::default();
    loop {
        let timeout = drain(&mut engine, &socket, &events, &metrics).await;
        metrics
            .active_calls
            .set(i64::try_from(engine.active_calls()).unwrap_or(i64::MAX));
        export_totals(&engine, &mut exported, &metrics);
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => execute(&mut engine, command),
                None => break,
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    receive(&mut engine, source, &buf[..n]);
                    // Take what else is already waiting before answering: one pass of the
                    // loop (and one drain) for a burst, not one per datagram.
                    for _ in 0..RECEIVE_BURST {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, source)) => receive(&mut engine, source, &buf[..n]),
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(err) => {
                                tracing::debug!(error = %err, "media socket receive failed");
                                break;
                            }
                        }
                    }
                }
                // ICMP port unreachable from a peer that went away surfaces here on Linux.
                Err(err) => tracing::debug!(error = %err, "media socket receive failed"),
            },
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(timeout)) => {
                engine.handle_timeout(Instant::now());
            }
        }
    }
    // Shutting down: end what is left, politely, and let the close datagrams out.
    engine.hang_up_all(Instant::now(), EndReason::HungUp);
    drain(&mut engine, &socket, &events, &metrics).await;
    metrics.active_calls.set(0);
    tracing::debug!("media engine stopped");
}

/// Adds what the engine counted since the last export to the media counters.
fn export_totals(engine: &Engine, exported: &mut CallStats, metrics: &Metrics) {
    let totals = engine.totals();
    if totals == *exported {
        return;
    }
    let delta = |now: u64, before: u64| now.saturating_sub(before);
    metrics
        .media_packets
        .with_label_values(&["in"])
        .inc_by(delta(totals.packets_in, exported.packets_in));
    metrics
        .media_packets
        .with_label_values(&["out"])
        .inc_by(delta(totals.packets_out, exported.packets_out));
    metrics
        .media_bytes
        .with_label_values(&["in"])
        .inc_by(delta(totals.bytes_in, exported.bytes_in));
    metrics
        .media_bytes
        .with_label_values(&["out"])
        .inc_by(delta(totals.bytes_out, exported.bytes_out));
    *exported = totals;
}

/// Datagrams taken in one go when several are waiting.
const RECEIVE_BURST: usize = 64;

fn receive(engine: &mut Engine, source: SocketAddr, datagram: &[u8]) {
    if !engine.handle_receive(Instant::now(), source, datagram) {
        tracing::trace!(%source, bytes = datagram.len(), "datagram for no call");
    }
}

fn execute(engine: &mut Engine, command: Command) {
    let now = Instant::now();
    match command {
        Command::AcceptOffer {
            offer,
            agent,
            reply,
        } => {
            let _ = reply.send(engine.accept_offer(now, &offer, agent));
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
    }
}

/// Carries out the engine's outputs until it waits; returns when it next needs time.
async fn drain(
    engine: &mut Engine,
    socket: &UdpSocket,
    events: &mpsc::UnboundedSender<MediaEvent>,
    metrics: &Metrics,
) -> Instant {
    loop {
        match engine.poll_output() {
            Output::Timeout(at) => return at,
            Output::Transmit {
                destination,
                contents,
            } => {
                // UDP sends almost never block; only wait when the kernel buffer is full.
                let sent = match socket.try_send_to(&contents, destination) {
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                        socket.send_to(&contents, destination).await
                    }
                    other => other,
                };
                if let Err(err) = sent {
                    tracing::debug!(%destination, error = %err, "media send failed");
                }
            }
            Output::Event(call, event) => {
                if let CallEvent::Quality { loss, jitter } = &event {
                    if let Some(loss) = loss {
                        metrics.call_packet_loss.observe(f64::from(*loss));
                    }
                    metrics.call_jitter.observe(*jitter);
                }
                let _ = events.send(MediaEvent { call, event });
            }
        }
    }
}
