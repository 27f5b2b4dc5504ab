//! Configuration: read once at start, from four sources, into typed values.
//!
//! Sources, later ones winning: built-in defaults, the optional TOML file (`--config`, same
//! names as the environment, case-insensitive), `.env` (when present; it never overrides the
//! real environment), the process environment. Every secret can also be given as `NAME_FILE`
//! holding a path (Docker/Kubernetes secrets). The Go precedent's names are read as aliases,
//! with a deprecation warning.
//!
//! Loading never stops at the first problem: [`ConfigError`] lists every missing or invalid
//! setting at once. Nothing else in the crate reads the environment.

pub mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use crate::domain::PhoneNumberId;
use crate::realtime::persona::InstructionsTemplate;
use crate::realtime::session::{Eagerness, NoiseReduction, TurnDetection, Voice};
use settings::{ALIASES, SETTINGS};

/// The whole configuration, parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP server.
    pub http: HttpConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// WhatsApp Cloud API.
    pub whatsapp: WhatsAppConfig,
    /// OpenAI / Azure OpenAI.
    pub ai: AiConfig,
    /// The voice session (voice, turn detection, transcription, tools).
    pub realtime: RealtimeConfig,
    /// The assistant's persona.
    pub assistant: AssistantConfig,
    /// Calls and media.
    pub calls: CallsConfig,
    /// Webhook event processing.
    pub events: EventsConfig,
    /// Bearer token of the admin API; the admin API is off without it.
    pub admin_token: Option<SecretString>,
    /// Logging.
    pub log: LogConfig,
    /// How long shutdown may take.
    pub shutdown_timeout: Duration,
    /// This instance's name on claims it takes.
    pub instance_id: String,
    /// Things worth telling the operator once logging is up (deprecated names, ...).
    pub warnings: Vec<String>,
    /// Local development mode, as asked for (`DEV_MODE`).
    pub dev: DevSettings,
}

/// `DEV_MODE`: whether `serve` runs as a local development service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevMode {
    /// On when nothing that a deployment sets is set (a first run on a fresh machine).
    Auto,
    /// On.
    On,
    /// Off.
    Off,
}

/// Local development mode as read: the mode, and which of the settings it changes the operator
/// set themselves (those are kept).
#[derive(Debug, Clone)]
pub struct DevSettings {
    /// `DEV_MODE`.
    pub mode: DevMode,
    bind_address_set: bool,
    stun_server_set: bool,
}

/// What local development mode changed.
#[derive(Debug)]
pub struct LocalDev {
    /// The throwaway admin token made for this run (none when `ADMIN_TOKEN` is set).
    pub generated_token: Option<SecretString>,
}

impl Config {
    /// Whether `serve` runs in local development mode (see `DEV_MODE`).
    pub fn is_local_dev(&self) -> bool {
        match self.dev.mode {
            DevMode::On => true,
            DevMode::Off => false,
            // A deployment sets at least one of these; a first run on a laptop sets none.
            DevMode::Auto => {
                self.admin_token.is_none()
                    && self.whatsapp.graph.is_none()
                    && self.whatsapp.app_secret.is_none()
            }
        }
    }

    /// Applies local development mode when it is on: HTTP on loopback only (unless
    /// `BIND_ADDRESS` is set), no STUN lookup (unless `STUN_SERVER` is set), and a throwaway
    /// admin token when there is none, so the test phone works at once. Only `serve` calls
    /// this: a config loaded elsewhere (tests, the CLI's other commands) is what it says.
    pub fn enter_local_dev(&mut self) -> Option<LocalDev> {
        if !self.is_local_dev() {
            return None;
        }
        if !self.dev.bind_address_set {
            self.http.bind_address = IpAddr::from([127, 0, 0, 1]);
        }
        if !self.dev.stun_server_set {
            self.calls.stun_server = None;
        }
        let generated_token = if self.admin_token.is_none() {
            // 122 random bits, URL-safe as it is (it goes in the page's URL fragment).
            let token = SecretString::from(uuid::Uuid::new_v4().simple().to_string());
            self.admin_token = Some(token.clone());
            Some(token)
        } else {
            None
        };
        Some(LocalDev { generated_token })
    }
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address to bind.
    pub bind_address: IpAddr,
    /// Port to bind (0 = any free port).
    pub port: u16,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Largest webhook body.
    pub webhook_max_body_bytes: usize,
    /// Per-IP limit on public routes.
    pub rate_limit: RateLimit,
    /// Header carrying the client IP behind a trusted proxy.
    pub client_ip_header: Option<axum::http::HeaderName>,
}

/// A token-bucket rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

/// Which database a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// An embedded SQLite file.
    Sqlite,
    /// A Postgres server (Supabase included).
    Postgres,
}

/// A database URL. It may hold a password, so it only prints redacted.
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: DatabaseBackend,
    url: SecretString,
}

impl DatabaseUrl {
    /// Parses `sqlite:…` or `postgres://…` / `postgresql://…`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let backend = if value.starts_with("sqlite:") {
            DatabaseBackend::Sqlite
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            DatabaseBackend::Postgres
        } else {
            return Err("must start with sqlite: or postgres:// (a Supabase connection string is a postgres:// URL)".to_owned());
        };
        if backend == DatabaseBackend::Postgres {
            Url::parse(value).map_err(|e| format!("is not a valid URL: {e}"))?;
        }
        Ok(Self {
            backend,
            url: SecretString::from(value.to_owned()),
        })
    }

    /// The backend.
    pub fn backend(&self) -> DatabaseBackend {
        self.backend
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }

    /// The URL with any password replaced by `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        match Url::parse(self.url.expose_secret()) {
            Ok(mut url) if url.password().is_some() => {
                // Only fails for URLs that cannot have a password, which this one has.
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            _ => self.url.expose_secret().to_owned(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

/// Database settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Where.
    pub url: DatabaseUrl,
    /// Pool size.
    pub max_connections: u32,
}

/// WhatsApp Cloud API settings.
#[derive(Debug, Clone)]
pub struct WhatsAppConfig {
    /// Graph credentials; `None` when not configured (local use).
    pub graph: Option<GraphCredentials>,
    /// App secret for webhook signatures.
    pub app_secret: Option<SecretString>,
    /// Subscription handshake token.
    pub verify_token: Option<SecretString>,
    /// Graph version, e.g. `v23.0`.
    pub api_version: String,
    /// Graph base URL.
    pub graph_url: Url,
    /// Accept unsigned POSTs when no app secret is set.
    pub allow_unsigned_webhooks: bool,
}

/// What the Graph API client needs.
#[derive(Debug, Clone)]
pub struct GraphCredentials {
    /// Bearer token.
    pub access_token: SecretString,
    /// The business phone number id.
    pub phone_number_id: PhoneNumberId,
}

/// OpenAI / Azure OpenAI settings.
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// The provider, when keys are configured.
    pub provider: Option<AiProvider>,
    /// Realtime model (Azure: deployment).
    pub realtime_model: String,
    /// Text model (Azure: deployment).
    pub text_model: String,
    /// Transcription model (Azure: deployment).
    pub transcribe_model: String,
}

/// Where the AI lives.
#[derive(Debug, Clone)]
pub enum AiProvider {
    /// OpenAI's API.
    OpenAi {
        /// API key.
        api_key: SecretString,
        /// Base URL.
        base_url: Url,
    },
    /// Azure OpenAI (GA v1 endpoints).
    Azure {
        /// `api-key`.
        api_key: SecretString,
        /// Resource URL.
        endpoint: Url,
        /// Realtime deployment.
        deployment: Option<String>,
    },
}

/// The Realtime voice session's settings (`REALTIME_*`).
#[derive(Debug, Clone)]
pub struct RealtimeConfig {
    /// `audio.output.voice`.
    pub voice: Voice,
    /// `audio.output.speed`; `None`: the default.
    pub speed: Option<f64>,
    /// `audio.input.turn_detection`; `None`: manual turns.
    pub turn_detection: Option<TurnDetection>,
    /// `audio.input.noise_reduction`; `None`: off.
    pub noise_reduction: Option<NoiseReduction>,
    /// ISO-639-1 language of the callers, for transcription; `None`: detected.
    pub transcription_language: Option<String>,
    /// `max_output_tokens`; `None`: no limit.
    pub max_output_tokens: Option<u32>,
    /// How long a tool may run before the model gets an error result.
    pub tool_timeout: Duration,
    /// How long opening a model session may take before the call is rejected (or, when
    /// already answered, the session is given up).
    pub open_timeout: Duration,
    /// A call's model session is replaced by a new one after this long.
    pub session_rollover: Duration,
}

/// The assistant's persona (`ASSISTANT_*`, `DEFAULT_TIME_ZONE`).
#[derive(Debug, Clone)]
pub struct AssistantConfig {
    /// Its name.
    pub name: String,
    /// The operator's persona template (`ASSISTANT_INSTRUCTIONS_FILE`); `None`: the
    /// built-in one.
    pub instructions: Option<InstructionsTemplate>,
    /// What it says first on every call; `None`: nothing.
    pub disclosure: Option<String>,
    /// The time zone of users whose own is not known.
    pub default_time_zone: chrono_tz::Tz,
}

/// What answers call audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceAgentKind {
    /// OpenAI / Azure OpenAI Realtime.
    Realtime,
    /// Return the caller's audio.
    Echo,
    /// Send silence (tests).
    Silence,
}

/// Call and media settings.
#[derive(Debug, Clone)]
pub struct CallsConfig {
    /// The media socket's bind address.
    pub bind_address: IpAddr,
    /// The IP for host candidates, when configured.
    pub host_ip: Option<IpAddr>,
    /// The media UDP port.
    pub udp_port: u16,
    /// Public IP for candidates; discovered with STUN when `None`.
    pub public_ip: Option<IpAddr>,
    /// STUN server `host:port`; `None` to skip discovery.
    pub stun_server: Option<String>,
    /// Ask for real-time scheduling for the media thread.
    pub realtime_priority: bool,
    /// Decrypt incoming call audio in the engine, not through str0m (`RTC_FAST_RECEIVE`).
    pub fast_receive: bool,
    /// Encrypt and send outgoing call audio in the engine (`RTC_FAST_SEND`).
    pub fast_send: bool,
    /// Calls held at once.
    pub max_concurrent_calls: u32,
    /// The agent.
    pub voice_agent: VoiceAgentKind,
    /// Echo agent delay.
    pub echo_delay: Duration,
    /// Outbound ring timeout.
    pub ring_timeout: Duration,
    /// ICE + DTLS must connect within.
    pub connect_timeout: Duration,
    /// Silence allowed on a connected call.
    pub media_timeout: Duration,
    /// Longest call.
    pub max_duration: Duration,
}

/// Webhook event processing settings.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// In-memory queue size.
    pub queue_capacity: usize,
    /// How long webhook payloads and processed events are kept.
    pub retention: Duration,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
    /// JSON when stdout is not a terminal, else pretty.
    Auto,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Format.
    pub format: LogFormat,
    /// `tracing` filter directives.
    pub filter: String,
}

/// Where the settings come from (besides the environment, which the caller passes in).
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// A `.env` file to read if it exists.
    pub dotenv_file: Option<PathBuf>,
}

/// Every problem found while loading, listed at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per problem, each starting with the setting's name.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "the configuration has {n} problem{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        write!(f, "See docs/configuration.md for every setting.")
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads the configuration from the given sources and `env` (the process environment in
    /// production, a list in tests).
    ///
    /// # Errors
    /// Every missing or invalid setting, listed together.
    pub fn load(
        options: &LoadOptions,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut raw = RawSettings::default();
        let mut problems = Vec::new();
        if let Some(path) = &options.config_file {
            if let Err(problem) = raw.add_toml_file(path) {
                problems.push(problem);
            }
        }
        if let Some(path) = &options.dotenv_file {
            if path.exists() {
                if let Err(problem) = raw.add_dotenv_file(path) {
                    problems.push(problem);
                }
            }
        }
        raw.add_env(env);
        let mut reader = Reader {
            raw: &raw,
            problems,
            warnings: Vec::new(),
        };
        let config = reader.config();
        if reader.problems.is_empty() {
            let mut config = config;
            config.warnings = reader.warnings;
            Ok(config)
        } else {
            Err(ConfigError {
                problems: reader.problems,
            })
        }
    }

    /// What is switched off by missing settings, with what to set: printed at start so a
    /// newcomer knows what to do next.
    pub fn disabled_features(&self) -> Vec<String> {
        let mut off = Vec::new();
        if self.whatsapp.graph.is_none() {
            off.push("WhatsApp Graph API (answering calls, sending messages): set WHATSAPP_ACCESS_TOKEN and WHATSAPP_PHONE_NUMBER_ID".to_owned());
        }
        if self.whatsapp.app_secret.is_none() {
            if self.whatsapp.allow_unsigned_webhooks {
                off.push("webhook signature verification: ALLOW_UNSIGNED_WEBHOOKS=true accepts unsigned POSTs; set WHATSAPP_APP_SECRET before exposing the service".to_owned());
            } else {
                off.push("webhook POSTs (refused with 503): set WHATSAPP_APP_SECRET, or ALLOW_UNSIGNED_WEBHOOKS=true for local testing".to_owned());
            }
        }
        if self.whatsapp.verify_token.is_none() {
            off.push(
                "webhook subscription handshake (GET answered 403): set WHATSAPP_VERIFY_TOKEN"
                    .to_owned(),
            );
        }
        if self.ai.provider.is_none() {
            off.push("AI assistant: set OPENAI_API_KEY, or AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT".to_owned());
        }
        if self.admin_token.is_none() {
            off.push("admin API and browser test phone: set ADMIN_TOKEN".to_owned());
        }
        off
    }
}

/// Where a raw value came from, for messages that say where to fix it.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    DotEnv(PathBuf),
    Env,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "from {}", path.display()),
            Origin::DotEnv(path) => write!(f, "from {}", path.display()),
            Origin::Env => f.write_str("from the environment"),
        }
    }
}

/// Values by name, each from the strongest source that set it. Empty values count as unset
/// (`.env` templates are full of `NAME=`).
#[derive(Default)]
struct RawSettings {
    values: BTreeMap<String, (String, Origin)>,
}

impl RawSettings {
    fn set(&mut self, name: String, value: String, origin: Origin) {
        if value.is_empty() {
            self.values.remove(&name);
        } else {
            self.values.insert(name, (value, origin));
        }
    }

    fn add_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in env {
            self.set(name, value, Origin::Env);
        }
    }

    fn add_dotenv_file(&mut self, path: &Path) -> Result<(), String> {
        let entries = dotenvy::from_path_iter(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        for entry in entries {
            let (name, value) =
                entry.map_err(|e| format!("{}: cannot parse: {e}", path.display()))?;
            self.set(name, value, Origin::DotEnv(path.to_owned()));
        }
        Ok(())
    }

    fn add_toml_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: cannot read: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("--config {}: not valid TOML: {e}", path.display()))?;
        let mut problems = Vec::new();
        for (key, value) in table {
            let name = key.to_ascii_uppercase();
            let known = settings::find(&name).is_some()
                || name
                    .strip_suffix("_FILE")
                    .and_then(settings::find)
                    .is_some_and(|s| s.secret)
                || ALIASES.iter().any(|(_, old)| *old == name);
            if !known {
                problems.push(format!("{key} (in {}): unknown setting", path.display()));
                continue;
            }
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other @ (toml::Value::Datetime(_)
                | toml::Value::Array(_)
                | toml::Value::Table(_)) => {
                    problems.push(format!(
                        "{key} (in {}): expected a string, number or boolean, found {}",
                        path.display(),
                        other.type_str()
                    ));
                    continue;
                }
            };
            self.set(name, value, Origin::File(path.to_owned()));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n  - "))
        }
    }
}

/// Reads settings out of [`RawSettings`], collecting problems instead of stopping.
struct Reader<'a> {
    raw: &'a RawSettings,
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn config(&mut self) -> Config {
        let http = HttpConfig {
            bind_address: self.parsed("BIND_ADDRESS", "an IP address"),
            port: self.parsed("PORT", "a port number (0-65535)"),
            request_timeout: Duration::from_secs(
                self.parsed_in("HTTP_REQUEST_TIMEOUT_SECS", 1..=3600),
            ),
            webhook_max_body_bytes: self
                .parsed_in("WEBHOOK_MAX_BODY_BYTES", 1024..=64 * 1024 * 1024),
            rate_limit: RateLimit {
                per_second: self.parsed("RATE_LIMIT_PER_SECOND", "a whole number above 0"),
                burst: self.parsed("RATE_LIMIT_BURST", "a whole number above 0"),
            },
            client_ip_header: self.value("CLIENT_IP_HEADER").and_then(|(v, origin)| {
                axum::http::HeaderName::from_str(&v)
                    .map_err(|_| {
                        self.problem(
                            "CLIENT_IP_HEADER",
                            &origin,
                            &v,
                            "is not a valid header name",
                        )
                    })
                    .ok()
            }),
        };

        let database = DatabaseConfig {
            url: match self.secret_string("DATABASE_URL") {
                Some((value, origin)) => DatabaseUrl::parse(&value).unwrap_or_else(|e| {
                    self.problems.push(format!("DATABASE_URL ({origin}) {e}"));
                    default_database_url()
                }),
                None => default_database_url(),
            },
            max_connections: self.parsed_in("DATABASE_MAX_CONNECTIONS", 1..=1000),
        };

        let whatsapp = self.whatsapp();
        let ai = self.ai();
        let calls = self.calls(&ai);
        let realtime = self.realtime();
        let assistant = self.assistant();

        let retention_days: u64 = self.parsed_in("WEBHOOK_RETENTION_DAYS", 7..=3650);
        let events = EventsConfig {
            queue_capacity: self.parsed_in("EVENT_QUEUE_CAPACITY", 1..=1_000_000),
            retention: Duration::from_secs(retention_days * 24 * 3600),
        };

        let log = LogConfig {
            format: match self.value("LOG_FORMAT") {
                None => LogFormat::Auto,
                Some((v, origin)) => match v.to_ascii_lowercase().as_str() {
                    "json" => LogFormat::Json,
                    "pretty" => LogFormat::Pretty,
                    _ => {
                        self.problem("LOG_FORMAT", &origin, &v, "must be json or pretty");
                        LogFormat::Auto
                    }
                },
            },
            filter: self
                .value("LOG_LEVEL")
                .or_else(|| self.raw.values.get("RUST_LOG").cloned())
                .map_or_else(|| "info".to_owned(), |(v, _)| v),
        };

        Config {
            http,
            database,
            whatsapp,
            ai,
            realtime,
            assistant,
            calls,
            events,
            admin_token: self.secret("ADMIN_TOKEN"),
            log,
            shutdown_timeout: Duration::from_secs(
                self.parsed_in("SHUTDOWN_TIMEOUT_SECS", 1..=3600),
            ),
            instance_id: self
                .value("INSTANCE_ID")
                .map(|(v, _)| v)
                .unwrap_or_else(default_instance_id),
            warnings: Vec::new(),
            dev: self.dev_settings(),
        }
    }

    fn dev_settings(&mut self) -> DevSettings {
        let mode = match self.value("DEV_MODE") {
            None => DevMode::Auto,
            Some((value, origin)) => match value.trim().to_ascii_lowercase().as_str() {
                "auto" => DevMode::Auto,
                "true" | "1" | "yes" | "on" => DevMode::On,
                "false" | "0" | "no" | "off" => DevMode::Off,
                _ => {
                    self.problem("DEV_MODE", &origin, &value, "is not auto, true or false");
                    DevMode::Off
                }
            },
        };
        DevSettings {
            mode,
            bind_address_set: self.is_set("BIND_ADDRESS"),
            stun_server_set: self.is_set("STUN_SERVER"),
        }
    }

    fn whatsapp(&mut self) -> WhatsAppConfig {
        let access_token = self.secret("WHATSAPP_ACCESS_TOKEN");
        let phone_number_id = self
            .value("WHATSAPP_PHONE_NUMBER_ID")
            .and_then(|(v, origin)| {
                PhoneNumberId::parse(&v)
                    .map_err(|e| self.problem("WHATSAPP_PHONE_NUMBER_ID", &origin, &v, &e.reason))
                    .ok()
            });
        let graph = match (access_token, phone_number_id) {
            (Some(access_token), Some(phone_number_id)) => Some(GraphCredentials {
                access_token,
                phone_number_id,
            }),
            (None, None) => None,
            (Some(_), None) if !self.is_set("WHATSAPP_PHONE_NUMBER_ID") => {
                self.problems.push("WHATSAPP_PHONE_NUMBER_ID: missing; it is needed with WHATSAPP_ACCESS_TOKEN (both or neither)".to_owned());
                None
            }
            (None, Some(_)) => {
                self.problems.push("WHATSAPP_ACCESS_TOKEN: missing; it is needed with WHATSAPP_PHONE_NUMBER_ID (both or neither)".to_owned());
                None
            }
            // The phone number id was set but invalid: already reported.
            (Some(_), None) => None,
        };
        let api_version = self.string_or_default("WHATSAPP_API_VERSION");
        let valid_version = api_version
            .strip_prefix('v')
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(major, minor)| {
                !major.is_empty()
                    && !minor.is_empty()
                    && major.bytes().all(|b| b.is_ascii_digit())
                    && minor.bytes().all(|b| b.is_ascii_digit())
            });
        if !valid_version {
            self.problems.push(format!(
                "WHATSAPP_API_VERSION: {api_version:?} is not a Graph version like v23.0"
            ));
        }
        WhatsAppConfig {
            graph,
            app_secret: self.secret("WHATSAPP_APP_SECRET"),
            verify_token: self.secret("WHATSAPP_VERIFY_TOKEN"),
            api_version,
            graph_url: self.url("WHATSAPP_GRAPH_URL"),
            allow_unsigned_webhooks: self.boolean("ALLOW_UNSIGNED_WEBHOOKS"),
        }
    }

    fn ai(&mut self) -> AiConfig {
        let openai_key = self.secret("OPENAI_API_KEY");
        let openai_base = self.url("OPENAI_BASE_URL");
        let azure_key = self.secret("AZURE_OPENAI_API_KEY");
        let azure_endpoint = self.value("AZURE_OPENAI_ENDPOINT").and_then(|(v, origin)| {
            Url::parse(&v)
                .map_err(|e| {
                    self.problem(
                        "AZURE_OPENAI_ENDPOINT",
                        &origin,
                        &v,
                        &format!("is not a URL: {e}"),
                    )
                })
                .ok()
        });
        let azure_endpoint_set = self.is_set("AZURE_OPENAI_ENDPOINT");
        let deployment = self.value("AZURE_OPENAI_DEPLOYMENT").map(|(v, _)| v);
        let provider = match (azure_key, azure_endpoint) {
            (Some(api_key), Some(endpoint)) => Some(AiProvider::Azure {
                api_key,
                endpoint,
                deployment,
            }),
            (Some(_), None) if !azure_endpoint_set => {
                self.problems.push(
                    "AZURE_OPENAI_ENDPOINT: missing; it is needed with AZURE_OPENAI_API_KEY"
                        .to_owned(),
                );
                None
            }
            (None, Some(_)) => {
                self.problems.push(
                    "AZURE_OPENAI_API_KEY: missing; it is needed with AZURE_OPENAI_ENDPOINT"
                        .to_owned(),
                );
                None
            }
            _ => openai_key.map(|api_key| AiProvider::OpenAi {
                api_key,
                base_url: openai_base,
            }),
        };
        AiConfig {
            provider,
            realtime_model: self.string_or_default("OPENAI_REALTIME_MODEL"),
            text_model: self.string_or_default("OPENAI_TEXT_MODEL"),
            transcribe_model: self.string_or_default("OPENAI_TRANSCRIBE_MODEL"),
        }
    }

    fn calls(&mut self, ai: &AiConfig) -> CallsConfig {
        let voice_agent = match self.value("VOICE_AGENT") {
            None if ai.provider.is_some() => VoiceAgentKind::Realtime,
            None => VoiceAgentKind::Echo,
            Some((v, origin)) => {
                match v.as_str() {
                    "realtime" if ai.provider.is_none() => {
                        self.problem("VOICE_AGENT", &origin, &v, "needs OPENAI_API_KEY, or AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT");
                        VoiceAgentKind::Echo
                    }
                    "realtime" => VoiceAgentKind::Realtime,
                    "echo" => VoiceAgentKind::Echo,
                    "silence" => VoiceAgentKind::Silence,
                    _ => {
                        self.problem(
                            "VOICE_AGENT",
                            &origin,
                            &v,
                            "must be realtime, echo or silence",
                        );
                        VoiceAgentKind::Echo
                    }
                }
            }
        };
        if voice_agent == VoiceAgentKind::Realtime {
            if let Some(AiProvider::Azure {
                deployment: None, ..
            }) = &ai.provider
            {
                self.problems.push("AZURE_OPENAI_DEPLOYMENT: missing; the realtime voice agent on Azure needs the realtime deployment name (or set VOICE_AGENT=echo)".to_owned());
            }
        }
        CallsConfig {
            bind_address: self.parsed("RTC_BIND_ADDRESS", "an IP address"),
            host_ip: self.value("RTC_HOST_IP").and_then(|(v, origin)| {
                v.parse()
                    .map_err(|_| self.problem("RTC_HOST_IP", &origin, &v, "is not an IP address"))
                    .ok()
            }),
            udp_port: self.parsed("RTC_UDP_PORT", "a port number (0-65535)"),
            public_ip: self.value("RTC_PUBLIC_IP").and_then(|(v, origin)| {
                v.parse()
                    .map_err(|_| self.problem("RTC_PUBLIC_IP", &origin, &v, "is not an IP address"))
                    .ok()
            }),
            stun_server: Some(self.string_or_default("STUN_SERVER"))
                .filter(|s| !s.eq_ignore_ascii_case("none")),
            realtime_priority: self.boolean("RTC_REALTIME_PRIORITY"),
            fast_receive: self.boolean("RTC_FAST_RECEIVE"),
            fast_send: self.boolean("RTC_FAST_SEND"),
            max_concurrent_calls: self.parsed_in("MAX_CONCURRENT_CALLS", 1..=100_000),
            voice_agent,
            echo_delay: Duration::from_millis(self.parsed_in("ECHO_DELAY_MS", 0..=10_000)),
            ring_timeout: Duration::from_secs(self.parsed_in("CALL_RING_TIMEOUT_SECS", 5..=600)),
            connect_timeout: Duration::from_secs(
                self.parsed_in("CALL_CONNECT_TIMEOUT_SECS", 2..=120),
            ),
            media_timeout: Duration::from_secs(self.parsed_in("CALL_MEDIA_TIMEOUT_SECS", 2..=600)),
            max_duration: Duration::from_secs(
                self.parsed_in("CALL_MAX_DURATION_SECS", 10..=86_400),
            ),
        }
    }

    fn realtime(&mut self) -> RealtimeConfig {
        let voice = match self.value("REALTIME_VOICE") {
            None => Voice::parse(default_of("REALTIME_VOICE"))
                .unwrap_or_else(|e| unreachable!("the default voice is valid: {e}")),
            Some((v, origin)) => Voice::parse(&v).unwrap_or_else(|e| {
                self.problem("REALTIME_VOICE", &origin, &v, &e);
                Voice::parse(default_of("REALTIME_VOICE"))
                    .unwrap_or_else(|e| unreachable!("the default voice is valid: {e}"))
            }),
        };
        // Read every VAD setting whatever the mode, so a typo is reported even when unused.
        let threshold = self.number_in("REALTIME_VAD_THRESHOLD", 0.0..=1.0);
        let prefix_padding_ms = self.parsed_in("REALTIME_VAD_PREFIX_PADDING_MS", 0..=5_000);
        let silence_duration_ms = self.parsed_in("REALTIME_VAD_SILENCE_MS", 100..=10_000);
        let idle_timeout_ms = self.optional_in("REALTIME_VAD_IDLE_TIMEOUT_MS", 5_000..=30_000);
        let eagerness = match self.value("REALTIME_VAD_EAGERNESS") {
            None => Eagerness::Auto,
            Some((v, origin)) => Eagerness::parse(&v).unwrap_or_else(|| {
                self.problem(
                    "REALTIME_VAD_EAGERNESS",
                    &origin,
                    &v,
                    "must be low, medium, high or auto",
                );
                Eagerness::Auto
            }),
        };
        let mode = self.string_or_default("REALTIME_TURN_DETECTION");
        let turn_detection = match mode.to_ascii_lowercase().as_str() {
            "server_vad" => Some(TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
                idle_timeout_ms,
                create_response: true,
                interrupt_response: true,
            }),
            "semantic_vad" => Some(TurnDetection::SemanticVad {
                eagerness,
                create_response: true,
                interrupt_response: true,
            }),
            "none" => None,
            _ => {
                let origin = self.origin_of("REALTIME_TURN_DETECTION");
                self.problem(
                    "REALTIME_TURN_DETECTION",
                    &origin,
                    &mode,
                    "must be server_vad, semantic_vad or none",
                );
                None
            }
        };
        let noise = self.string_or_default("REALTIME_NOISE_REDUCTION");
        let noise_reduction = match noise.to_ascii_lowercase().as_str() {
            "near_field" => Some(NoiseReduction::NearField),
            "far_field" => Some(NoiseReduction::FarField),
            "none" => None,
            _ => {
                let origin = self.origin_of("REALTIME_NOISE_REDUCTION");
                self.problem(
                    "REALTIME_NOISE_REDUCTION",
                    &origin,
                    &noise,
                    "must be near_field, far_field or none",
                );
                None
            }
        };
        let transcription_language =
            self.value("REALTIME_TRANSCRIPTION_LANGUAGE")
                .and_then(|(v, origin)| {
                    let code = v.trim().to_ascii_lowercase();
                    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) {
                        Some(code)
                    } else {
                        self.problem(
                            "REALTIME_TRANSCRIPTION_LANGUAGE",
                            &origin,
                            &v,
                            "is not a two-letter ISO-639-1 code like en or de",
                        );
                        None
                    }
                });
        let speed = self.optional_number_in("REALTIME_VOICE_SPEED", 0.25..=1.5);
        RealtimeConfig {
            voice,
            speed,
            turn_detection,
            noise_reduction,
            transcription_language,
            max_output_tokens: self.optional_in("REALTIME_MAX_OUTPUT_TOKENS", 1..=4096),
            tool_timeout: Duration::from_secs(
                self.parsed_in("REALTIME_TOOL_TIMEOUT_SECS", 1..=120),
            ),
            open_timeout: Duration::from_secs(self.parsed_in("REALTIME_OPEN_TIMEOUT_SECS", 1..=60)),
            session_rollover: Duration::from_secs(
                self.parsed_in("REALTIME_SESSION_ROLLOVER_SECS", 10..=3540),
            ),
        }
    }

    fn assistant(&mut self) -> AssistantConfig {
        let name = self.string_or_default("ASSISTANT_NAME").trim().to_owned();
        if name.is_empty() || name.chars().count() > 40 || name.chars().any(char::is_control) {
            let origin = self.origin_of("ASSISTANT_NAME");
            self.problem(
                "ASSISTANT_NAME",
                &origin,
                &name,
                "must be 1 to 40 characters on one line",
            );
        }
        let instructions = self
            .value("ASSISTANT_INSTRUCTIONS_FILE")
            .and_then(|(path, origin)| {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| {
                        self.problem(
                            "ASSISTANT_INSTRUCTIONS_FILE",
                            &origin,
                            &path,
                            &format!("cannot be read: {e}"),
                        )
                    })
                    .ok()?;
                InstructionsTemplate::parse(&text)
                    .map_err(|e| {
                        self.problem("ASSISTANT_INSTRUCTIONS_FILE", &origin, &path, &e);
                    })
                    .ok()
            });
        let disclosure = match self.value("ASSISTANT_DISCLOSURE") {
            None => Some(format!(
                "Hi, this is {name}, an AI assistant. This call may be recorded."
            )),
            Some((v, _)) if v.trim().eq_ignore_ascii_case("none") => None,
            Some((v, _)) => Some(v.trim().to_owned()),
        };
        let zone = self.string_or_default("DEFAULT_TIME_ZONE");
        let default_time_zone = zone.trim().parse().unwrap_or_else(|_| {
            let origin = self.origin_of("DEFAULT_TIME_ZONE");
            self.problem(
                "DEFAULT_TIME_ZONE",
                &origin,
                &zone,
                "is not an IANA time zone like Europe/Berlin or America/New_York",
            );
            chrono_tz::Tz::UTC
        });
        AssistantConfig {
            name,
            instructions,
            disclosure,
            default_time_zone,
        }
    }

    // --- primitives -------------------------------------------------------------------------

    /// Where `name`'s value came from (the environment when it is the default).
    fn origin_of(&self, name: &str) -> Origin {
        self.raw
            .values
            .get(name)
            .map_or(Origin::Env, |(_, origin)| origin.clone())
    }

    /// A decimal number in `range`; the default when unset or invalid (reported).
    fn number_in(&mut self, name: &'static str, range: std::ops::RangeInclusive<f64>) -> f64 {
        self.optional_number_in(name, range)
            .unwrap_or_else(|| match default_of(name).parse() {
                Ok(value) => value,
                Err(_) => unreachable!("the default of {name} is a number (tested)"),
            })
    }

    /// A decimal number in `range`, or `None` when unset or invalid (reported).
    fn optional_number_in(
        &mut self,
        name: &'static str,
        range: std::ops::RangeInclusive<f64>,
    ) -> Option<f64> {
        let (raw, origin) = self.value(name)?;
        match raw.trim().parse::<f64>() {
            Ok(value) if range.contains(&value) => Some(value),
            Ok(_) | Err(_) => {
                let expected = format!("a number from {} to {}", range.start(), range.end());
                self.problem(name, &origin, &raw, &format!("is not {expected}"));
                None
            }
        }
    }

    /// A whole number in `range`, or `None` when unset.
    fn optional_in<T>(
        &mut self,
        name: &'static str,
        range: std::ops::RangeInclusive<T>,
    ) -> Option<T>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let (raw, origin) = self.value(name)?;
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        match raw.trim().parse::<T>() {
            Ok(value) if range.contains(&value) => Some(value),
            Ok(_) | Err(_) => {
                self.problem(name, &origin, &raw, &format!("is not {expected}"));
                None
            }
        }
    }

    fn problem(&mut self, name: &str, origin: &Origin, value: &str, what: &str) {
        let shown = if settings::find(name).is_some_and(|s| s.secret) {
            "(secret)".to_owned()
        } else {
            format!("{value:?}")
        };
        self.problems
            .push(format!("{name} ({origin}): {shown} {what}"));
    }

    fn is_set(&self, name: &str) -> bool {
        self.raw.values.contains_key(name)
    }

    /// The raw value of `name`, falling back to its deprecated alias.
    fn value(&mut self, name: &'static str) -> Option<(String, Origin)> {
        debug_assert!(settings::find(name).is_some(), "{name} is not in SETTINGS");
        if let Some(found) = self.raw.values.get(name) {
            return Some(found.clone());
        }
        let (_, old) = ALIASES.iter().find(|(new, _)| *new == name)?;
        let found = self.raw.values.get(*old)?.clone();
        self.warnings.push(format!(
            "{old} is deprecated (a name from the Go bridge); rename it to {name}"
        ));
        Some(found)
    }

    /// A secret from `NAME` or from the file `NAME_FILE` names (not both).
    fn secret_string(&mut self, name: &'static str) -> Option<(String, Origin)> {
        let file_name = format!("{name}_FILE");
        let direct = self.value(name);
        let file = self.raw.values.get(&file_name).cloned();
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problems
                    .push(format!("{name}: set both {name} and {file_name}; keep one"));
                None
            }
            (Some(direct), None) => Some(direct),
            (None, Some((path, origin))) => match std::fs::read_to_string(&path) {
                // Files written by editors and `echo` end with a newline that is not part of the
                // secret.
                Ok(contents) => {
                    let secret = contents.trim_end_matches(['\n', '\r']).to_owned();
                    if secret.is_empty() {
                        self.problems
                            .push(format!("{file_name} ({origin}): {path} is empty"));
                        None
                    } else {
                        Some((secret, origin))
                    }
                }
                Err(e) => {
                    self.problems
                        .push(format!("{file_name} ({origin}): cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn secret(&mut self, name: &'static str) -> Option<SecretString> {
        self.secret_string(name)
            .map(|(value, _)| SecretString::from(value))
    }

    fn string_or_default(&mut self, name: &'static str) -> String {
        self.value(name)
            .map_or_else(|| default_of(name).to_owned(), |(v, _)| v)
    }

    fn parsed<T: FromStr>(&mut self, name: &'static str, expected: &str) -> T {
        let default = || match default_of(name).parse() {
            Ok(value) => value,
            Err(_) => unreachable!("the default of {name} parses (tested)"),
        };
        match self.value(name) {
            None => default(),
            Some((value, origin)) => value.trim().parse().unwrap_or_else(|_| {
                self.problem(name, &origin, &value, &format!("is not {expected}"));
                default()
            }),
        }
    }

    fn parsed_in<T>(&mut self, name: &'static str, range: std::ops::RangeInclusive<T>) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("a whole number from {} to {}", range.start(), range.end());
        let value: T = self.parsed(name, &expected);
        if !range.contains(&value) && self.is_set(name) {
            let raw = value.to_string();
            let origin = self
                .raw
                .values
                .get(name)
                .map_or(Origin::Env, |(_, o)| o.clone());
            self.problem(name, &origin, &raw, &format!("is not {expected}"));
        }
        value
    }

    fn boolean(&mut self, name: &'static str) -> bool {
        let Some((value, origin)) = self.value(name) else {
            return default_of(name) == "true";
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                self.problem(name, &origin, &value, "is not true or false");
                false
            }
        }
    }

    fn url(&mut self, name: &'static str) -> Url {
        let fallback = || {
            Url::parse(default_of(name))
                .unwrap_or_else(|_| unreachable!("the default of {name} is a URL"))
        };
        let Some((value, origin)) = self.value(name) else {
            return fallback();
        };
        match Url::parse(&value) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => {
                self.problem(name, &origin, &value, "is not an http(s) URL");
                fallback()
            }
        }
    }
}

fn default_of(name: &str) -> &'static str {
    settings::find(name).map_or("", |s| s.default)
}

fn default_database_url() -> DatabaseUrl {
    DatabaseUrl {
        backend: DatabaseBackend::Sqlite,
        url: SecretString::from(default_of("DATABASE_URL").to_owned()),
    }
}

fn default_instance_id() -> String {
    // The kernel's host name; no extra dependency for one read.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "whatsapp-bridge".to_owned())
}

/// The names `SETTINGS` lists, for tests and docs.
pub fn setting_names() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().map(|s| s.name)
}

#[cfg(test)]
mod tests;
