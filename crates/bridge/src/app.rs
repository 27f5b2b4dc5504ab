//! The application: built from a [`Config`], run until a shutdown future resolves.
//!
//! [`App::build`] connects and migrates the database and binds the HTTP listener (port 0 is
//! fine: [`App::http_addr`] says which port it got), so tests start the real app beside fakes.
//! [`App::run_until_stopped`] starts the tasks and serves until `shutdown` resolves, then stops
//! in order:
//!
//! 1. `/ready` turns 503 and the listener stops accepting; in-flight requests finish.
//! 2. The inbox writer stores what it was handed; the sweeper and the retention job stop.
//! 3. The router drains the events already queued.
//! 4. Claims on anything left are released (it runs at the next start or on another
//!    instance) and the database is closed.
//!
//! All of it within `SHUTDOWN_TIMEOUT_SECS`; past the deadline the remaining work is dropped,
//! which loses nothing because every event is stored before its webhook is answered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::assistant::ToolRegistry;
use crate::calls::{CallSettings, Calls, VoiceService};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, VoiceAgentKind};
use crate::events::handlers::{CallEvents, MessageEvents, RecordMessages};
use crate::events::inbox::{spawn_writer, WriterParts};
use crate::events::router::{Handlers, Router, Sweeper};
use crate::http::rate_limit::{self, IpRateLimiter};
use crate::http::{self, AppState, ServiceStatus, Shared, WebhookSettings};
use crate::media::{self, MediaSettings};
use crate::realtime::model::OpenAiRealtime;
use crate::realtime::{Persona, RealtimeClient};
use crate::scheduler::retention::Retention;
use crate::store::{SqlStore, Store};
use crate::telemetry::Metrics;
use crate::whatsapp::client::GraphClient;

/// How often the sweeper looks for events waiting in the store when nothing wakes it.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Builds an [`App`], with the parts tests replace.
pub struct AppBuilder {
    config: Config,
    clock: Arc<dyn Clock>,
    listener: Option<TcpListener>,
    calls: Option<Arc<dyn CallEvents>>,
    messages: Option<Arc<dyn MessageEvents>>,
    sweep_interval: Duration,
}

impl AppBuilder {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves on `listener` instead of binding `BIND_ADDRESS:PORT`.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Handles call events with `calls` instead of recording them.
    pub fn call_events(mut self, calls: Arc<dyn CallEvents>) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Handles message events with `messages` instead of recording them.
    pub fn message_events(mut self, messages: Arc<dyn MessageEvents>) -> Self {
        self.messages = Some(messages);
        self
    }

    /// Sweeps the store for waiting events this often.
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Connects and migrates the database and binds the listener.
    ///
    /// # Errors
    /// When the database cannot be reached or migrated, or the port cannot be bound; the
    /// message says which and how to fix it.
    pub async fn build(self) -> anyhow::Result<App> {
        let config = self.config;
        let metrics = Metrics::new().context("failed to register metrics")?;
        let store = SqlStore::connect(&config.database)
            .await
            .with_context(|| {
                format!(
                    "cannot open the database {} (DATABASE_URL)",
                    config.database.url.redacted()
                )
            })?
            .with_metrics(metrics.clone());
        store
            .migrate()
            .await
            .context("cannot apply the database migrations")?;
        let store: Arc<dyn Store> = Arc::new(store);
        // Claims this instance held before a restart: free them so the sweeper takes the
        // events at once instead of when the leases run out.
        let released = store
            .release_events(&config.instance_id, None)
            .await
            .context("cannot release this instance's earlier claims")?;
        if released > 0 {
            tracing::info!(
                events = released,
                "events left from the previous run will be processed"
            );
        }

        let listener = match self.listener {
            Some(listener) => listener,
            None => {
                let addr = SocketAddr::new(config.http.bind_address, config.http.port);
                TcpListener::bind(addr).await.with_context(|| {
                    format!(
                        "cannot listen on {addr}: is another process using PORT={}?",
                        config.http.port
                    )
                })?
            }
        };
        let http_addr = listener.local_addr().context("listener has no address")?;

        let media_bind = SocketAddr::new(config.calls.bind_address, config.calls.udp_port);
        let media_socket = media::bind(media_bind).with_context(|| {
            format!("cannot bind the media socket {media_bind}: is another process using RTC_UDP_PORT={}?", config.calls.udp_port)
        })?;
        let media_port = media_socket
            .local_addr()
            .context("media socket has no address")?
            .port();
        let host_ip = config
            .calls
            .host_ip
            .or_else(|| Some(config.calls.bind_address).filter(|ip| !ip.is_unspecified()))
            .or_else(media::route_ip)
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let public_ip = match (config.calls.public_ip, &config.calls.stun_server) {
            (Some(ip), _) => Some(ip),
            (None, Some(server)) => discover_public_ip(&media_socket, server).await,
            (None, None) => None,
        };
        let media_settings = MediaSettings {
            host_ip,
            public_ip,
            connect_timeout: config.calls.connect_timeout,
            media_timeout: config.calls.media_timeout,
            max_call_length: config.calls.max_duration,
            ring_timeout: config.calls.ring_timeout,
            realtime_priority: config.calls.realtime_priority,
            fast_receive: config.calls.fast_receive,
            fast_send: config.calls.fast_send,
        };
        tracing::info!(
            media = %SocketAddr::new(host_ip, media_port),
            public = ?public_ip,
            "call media on one UDP port"
        );

        let messages = self.messages.unwrap_or_else(|| {
            Arc::new(RecordMessages {
                store: store.clone(),
                clock: self.clock.clone(),
            })
        });

        Ok(App {
            config,
            clock: self.clock,
            listener,
            http_addr,
            media_socket,
            media_settings,
            store,
            metrics,
            call_events: self.calls,
            messages,
            sweep_interval: self.sweep_interval,
        })
    }
}

/// The voice assistant every call answered by the model shares: the provider, the tools and
/// the persona.
fn voice_service(config: &Config, metrics: &Metrics) -> anyhow::Result<VoiceService> {
    let client = RealtimeClient::from_config(&config.ai, metrics.clone())
        .context("cannot build the OpenAI/Azure Realtime client")?
        .context("VOICE_AGENT=realtime needs OpenAI or Azure OpenAI keys")?;
    let tools = ToolRegistry::builder()
        .timeout(config.realtime.tool_timeout)
        .default_time_zone(config.assistant.default_time_zone)
        .build();
    Ok(VoiceService {
        model: Arc::new(OpenAiRealtime::new(
            client,
            config.ai.clone(),
            config.realtime.clone(),
        )),
        tools,
        persona: Persona::from_config(&config.assistant),
        open_timeout: config.realtime.open_timeout,
        rollover_after: config.realtime.session_rollover,
        goodbye_grace: Duration::from_secs(2),
    })
}

/// Asks the STUN server which public address the media socket's packets come from.
async fn discover_public_ip(
    socket: &std::net::UdpSocket,
    server: &str,
) -> Option<std::net::IpAddr> {
    // A second handle on the same socket, for the one exchange; the engine gets the socket.
    let probe = socket
        .try_clone()
        .ok()
        .and_then(|clone| tokio::net::UdpSocket::from_std(clone).ok())?;
    match media::stun::public_address(&probe, server, Duration::from_secs(2)).await {
        Ok(addr) => Some(addr.ip()),
        Err(err) => {
            tracing::warn!(error = %err, "no public address for call media; peers outside this network cannot reach it: set RTC_PUBLIC_IP");
            None
        }
    }
}

/// A built application, ready to run.
pub struct App {
    config: Config,
    clock: Arc<dyn Clock>,
    listener: TcpListener,
    http_addr: SocketAddr,
    media_socket: std::net::UdpSocket,
    media_settings: MediaSettings,
    store: Arc<dyn Store>,
    metrics: Metrics,
    /// Replaces the calls service as the router's call handler (tests).
    call_events: Option<Arc<dyn CallEvents>>,
    messages: Arc<dyn MessageEvents>,
    sweep_interval: Duration,
}

impl App {
    /// A builder with the system clock and the built-in handlers.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            clock: Arc::new(SystemClock),
            listener: None,
            calls: None,
            messages: None,
            sweep_interval: SWEEP_INTERVAL,
        }
    }

    /// Builds with the defaults.
    ///
    /// # Errors
    /// See [`AppBuilder::build`].
    pub async fn build(config: Config) -> anyhow::Result<App> {
        Self::builder(config).build().await
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address call media is received on (the host candidate).
    pub fn media_addr(&self) -> SocketAddr {
        let port = self.media_socket.local_addr().map_or(0, |a| a.port());
        SocketAddr::new(self.media_settings.host_ip, port)
    }

    /// The store (for tests and the CLI).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The metrics (for tests).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops gracefully (see the module docs).
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            config,
            clock,
            listener,
            http_addr: _,
            media_socket,
            media_settings,
            store,
            metrics,
            call_events,
            messages,
            sweep_interval,
        } = self;
        let cancel = CancellationToken::new();
        let owner = config.instance_id.clone();

        // --- calls ----------------------------------------------------------------------------
        let (media, media_events, mut media_thread) =
            media::spawn(media_socket, &media_settings, metrics.clone())
                .context("cannot start the media engine")?;
        let graph = GraphClient::from_config(&config.whatsapp, metrics.clone())
            .context("cannot build the Graph API client")?;
        let agent = match config.calls.voice_agent {
            VoiceAgentKind::Echo => call_core::AgentKind::Echo {
                delay: config.calls.echo_delay,
            },
            VoiceAgentKind::Silence => call_core::AgentKind::Silence,
            VoiceAgentKind::Realtime => call_core::AgentKind::Model,
        };
        let voice = match config.calls.voice_agent {
            VoiceAgentKind::Realtime => Some(Arc::new(voice_service(&config, &metrics)?)),
            VoiceAgentKind::Echo | VoiceAgentKind::Silence => None,
        };
        let (calls, media_pump) = Calls::new(
            media,
            media_events,
            graph,
            store.clone(),
            clock.clone(),
            metrics.clone(),
            CallSettings {
                agent,
                max_concurrent_calls: usize::try_from(config.calls.max_concurrent_calls)
                    .unwrap_or(usize::MAX),
                instance_id: owner.clone(),
            },
            voice,
        );
        let handlers = Handlers {
            calls: call_events.unwrap_or_else(|| Arc::new(calls.clone())),
            messages,
        };

        // --- the event pipeline ---------------------------------------------------------------
        let capacity = config.events.queue_capacity;
        metrics
            .event_queue_capacity
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        let (queue, queue_rx) = mpsc::channel(capacity);
        let overflow = Arc::new(Notify::new());
        let (inbox, writer) = spawn_writer(WriterParts {
            store: store.clone(),
            queue: queue.clone(),
            overflow: overflow.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            owner: owner.clone(),
        });
        let router = tokio::spawn(
            Router {
                store: store.clone(),
                handlers,
                clock: clock.clone(),
                metrics: metrics.clone(),
                phone_number_id: config
                    .whatsapp
                    .graph
                    .as_ref()
                    .map(|g| g.phone_number_id.clone()),
                seen_unknown: Default::default(),
            }
            .run(queue_rx),
        );
        let sweeper = tokio::spawn(
            Sweeper {
                store: store.clone(),
                queue,
                overflow,
                clock: clock.clone(),
                owner: owner.clone(),
                interval: sweep_interval,
            }
            .run(cancel.clone()),
        );
        let retention = tokio::spawn(
            Retention {
                store: store.clone(),
                clock: clock.clone(),
                metrics: metrics.clone(),
                keep: config.events.retention,
            }
            .run_until_stopped(cancel.clone()),
        );

        // --- HTTP -----------------------------------------------------------------------------
        let limiter = Arc::new(IpRateLimiter::new(
            config.http.rate_limit,
            config.http.client_ip_header.clone(),
        ));
        rate_limit::spawn_janitor(limiter.clone(), cancel.clone());
        let state = AppState::new(Shared {
            store: store.clone(),
            inbox,
            metrics: metrics.clone(),
            clock,
            limiter,
            webhook: WebhookSettings {
                app_secret: config.whatsapp.app_secret.clone(),
                verify_token: config.whatsapp.verify_token.clone(),
                allow_unsigned: config.whatsapp.allow_unsigned_webhooks,
                max_body_bytes: config.http.webhook_max_body_bytes,
            },
            status: ServiceStatus {
                instance_id: owner.clone(),
                whatsapp_configured: config.whatsapp.graph.is_some(),
                ai_configured: config.ai.provider.is_some(),
                webhook_signature: match (
                    config.whatsapp.app_secret.is_some(),
                    config.whatsapp.allow_unsigned_webhooks,
                ) {
                    (true, _) => "verified",
                    (false, true) => "unsigned",
                    (false, false) => "not_configured",
                },
            },
            started: Instant::now(),
            shutdown: cancel.clone(),
            admin_token: config.admin_token.clone(),
            calls: Some(calls.clone()),
        });
        let app = http::router(state, config.http.request_timeout);
        let signal = {
            let cancel = cancel.clone();
            async move {
                tokio::select! {
                    () = shutdown => tracing::info!("shutdown requested: finishing in-flight requests and queued events"),
                    () = cancel.cancelled() => {}
                }
                cancel.cancel();
            }
        };
        let mut server = tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(signal)
            .await
        });

        let server_result = tokio::select! {
            result = &mut server => result,
            () = cancel.cancelled() => {
                let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
                match tokio::time::timeout_at(deadline, &mut server).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("shutdown deadline passed with requests still in flight; closing them");
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        // However the server stopped, stop the rest.
        let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
        cancel.cancel();

        // Calls first: each is ended politely (Graph terminate, DTLS close) and recorded.
        if calls.active() > 0 {
            tracing::info!(calls = calls.active(), "ending active calls");
            if tokio::time::timeout_at(deadline, calls.hang_up_all())
                .await
                .is_err()
            {
                tracing::warn!("shutdown deadline passed while ending calls");
            }
        }
        drop(calls);

        let router_abort = router.abort_handle();
        let drained = tokio::time::timeout_at(deadline, async {
            let _ = writer.await;
            let _ = sweeper.await;
            let _ = retention.await;
            let _ = router.await;
        })
        .await;
        if drained.is_err() {
            router_abort.abort();
            tracing::warn!(
                queued = metrics.event_queue_depth.get(),
                "shutdown deadline passed with events still queued; they stay stored and run at the next start"
            );
        }
        // The media thread stops once the router (the last holder of the calls service) is gone.
        if tokio::time::timeout_at(deadline, async {
            media_thread.join().await;
            let _ = media_pump.await;
        })
        .await
        .is_err()
        {
            media_thread.stop();
        }
        match store.release_events(&owner, None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(events = n, "released unfinished events for the next start"),
            Err(err) => {
                tracing::error!(error = %err, "could not release unfinished events; they run when their lease ends")
            }
        }
        store.close().await;
        tracing::info!("stopped");

        match server_result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(anyhow::Error::new(err).context("the HTTP server failed")),
            Err(err) if err.is_cancelled() => Ok(()),
            Err(err) => Err(anyhow::Error::new(err).context("the HTTP server panicked")),
        }
    }
}
