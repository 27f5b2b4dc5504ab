//! The list of every setting: name, whether it is a secret, its default and what it does.
//!
//! It is the single list the loader checks names against (a TOML key that is not here is a
//! typo and refused), and `docs/configuration.md` is tested against it so the reference cannot
//! drift from the code.

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The environment variable (and TOML key, case-insensitive).
    pub name: &'static str,
    /// Secrets never print, and can also be given as `NAME_FILE` holding a path.
    pub secret: bool,
    /// The default, in words ("" when there is none).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

const fn setting(name: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        secret: false,
        default,
        help,
    }
}

const fn secret(name: &'static str, help: &'static str) -> Setting {
    Setting {
        name,
        secret: true,
        default: "",
        help,
    }
}

/// Old names from the Go precedent, still read, with a deprecation warning: (new, old).
pub const ALIASES: &[(&str, &str)] = &[
    ("WHATSAPP_ACCESS_TOKEN", "WHATSAPP_TOKEN"),
    ("WHATSAPP_PHONE_NUMBER_ID", "PHONE_NUMBER_ID"),
    ("WHATSAPP_VERIFY_TOKEN", "VERIFY_TOKEN"),
];

/// Every setting the service reads.
pub const SETTINGS: &[Setting] = &[
    // HTTP
    setting("PORT", "3011", "HTTP port for webhooks, health, metrics and the admin API."),
    setting("BIND_ADDRESS", "0.0.0.0", "Address the HTTP server binds to (127.0.0.1 to keep it local)."),
    setting("HTTP_REQUEST_TIMEOUT_SECS", "15", "A request that takes longer is answered 408."),
    setting("WEBHOOK_MAX_BODY_BYTES", "1048576", "Largest webhook body accepted; larger ones get 413."),
    setting("RATE_LIMIT_PER_SECOND", "10", "Per-client-IP request rate on public routes (webhook POSTs with a valid signature are exempt)."),
    setting("RATE_LIMIT_BURST", "20", "Per-client-IP burst on public routes."),
    setting("CLIENT_IP_HEADER", "", "Header holding the client IP when behind a proxy you trust (e.g. CF-Connecting-IP, X-Forwarded-For: the first address is used). Unset: the TCP peer address."),
    // Storage
    Setting { name: "DATABASE_URL", secret: true, default: "sqlite://data/whatsapp-bridge.db", help: "sqlite://path (created if missing) or postgres://user:password@host/db (Supabase: its connection string)." },
    setting("DATABASE_MAX_CONNECTIONS", "10", "Connection pool size."),
    setting("WEBHOOK_RETENTION_DAYS", "30", "Raw webhook payloads and processed events older than this are deleted (they hold message bodies). At least 7: Meta redelivers for days and the stored ids are what make redeliveries no-ops."),
    // WhatsApp
    secret("WHATSAPP_ACCESS_TOKEN", "Graph API bearer token. Alias: WHATSAPP_TOKEN (deprecated)."),
    setting("WHATSAPP_PHONE_NUMBER_ID", "", "The business phone number id; webhooks for other numbers are recorded and ignored. Alias: PHONE_NUMBER_ID (deprecated)."),
    secret("WHATSAPP_APP_SECRET", "Meta app secret: verifies X-Hub-Signature-256. Without it webhook POSTs are refused (503) unless ALLOW_UNSIGNED_WEBHOOKS=true."),
    secret("WHATSAPP_VERIFY_TOKEN", "The token you type into Meta's webhook settings for the subscription handshake. Alias: VERIFY_TOKEN (deprecated)."),
    setting("WHATSAPP_API_VERSION", "v23.0", "Graph API version."),
    setting("WHATSAPP_GRAPH_URL", "https://graph.facebook.com", "Graph API base URL (tests point it at a fake)."),
    setting("ALLOW_UNSIGNED_WEBHOOKS", "false", "Accept webhook POSTs without a signature when no app secret is set. Local testing only."),
    // AI
    secret("OPENAI_API_KEY", "OpenAI API key."),
    setting("OPENAI_BASE_URL", "https://api.openai.com/v1", "OpenAI API base URL."),
    secret("AZURE_OPENAI_API_KEY", "Azure OpenAI key (used instead of OpenAI when set with AZURE_OPENAI_ENDPOINT)."),
    setting("AZURE_OPENAI_ENDPOINT", "", "Azure OpenAI resource URL, e.g. https://my-resource.openai.azure.com."),
    setting("AZURE_OPENAI_DEPLOYMENT", "", "Azure realtime deployment name."),
    setting("OPENAI_REALTIME_MODEL", "gpt-realtime", "Realtime (voice) model; on Azure, the deployment name."),
    setting("OPENAI_TEXT_MODEL", "gpt-5-mini", "Text chat model; on Azure, the deployment name."),
    setting("OPENAI_TRANSCRIBE_MODEL", "gpt-4o-transcribe", "Transcription model; on Azure, the deployment name."),
    // Voice assistant
    setting("ASSISTANT_NAME", "Ziggy", "The assistant's name, as it introduces itself (1 to 40 characters)."),
    setting("ASSISTANT_INSTRUCTIONS_FILE", "", "A Markdown file replacing the built-in persona (crates/bridge/assets/ziggy.md), read at start. Placeholders: {{assistant_name}}, {{user_name}}, {{local_time}}, {{time_zone}}."),
    setting("ASSISTANT_DISCLOSURE", "Hi, this is {ASSISTANT_NAME}, an AI assistant. This call may be recorded.", "What the assistant says first on every call, word for word (the AI and recording disclosure your jurisdiction may require); none to say nothing."),
    setting("DEFAULT_TIME_ZONE", "UTC", "IANA time zone (e.g. Europe/Berlin) for users whose own is not known: the assistant hears and says times in it."),
    setting("REALTIME_VOICE", "marin", "Voice on calls: alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin or cedar."),
    setting("REALTIME_VOICE_SPEED", "", "Speaking speed, 0.25 to 1.5. Unset: the model's default (1.0)."),
    setting("REALTIME_TURN_DETECTION", "server_vad", "How the model decides the caller has finished: server_vad (silence-based; predictable on phone lines), semantic_vad (a model judges; more natural, sometimes slower, more prone to speaker echo) or none (turns never end by themselves; tests)."),
    setting("REALTIME_VAD_THRESHOLD", "0.5", "server_vad: speech threshold from 0.0 to 1.0; raise it on noisy lines."),
    setting("REALTIME_VAD_PREFIX_PADDING_MS", "300", "server_vad: audio kept from before speech was detected, in ms."),
    setting("REALTIME_VAD_SILENCE_MS", "500", "server_vad: silence that ends the caller's turn, in ms (100 to 10000). Lower answers sooner but cuts people off mid-sentence."),
    setting("REALTIME_VAD_IDLE_TIMEOUT_MS", "", "server_vad: after this much silence from the caller (5000 to 30000 ms) the assistant speaks up. Unset: it waits."),
    setting("REALTIME_VAD_EAGERNESS", "auto", "semantic_vad: low, medium, high or auto (medium)."),
    setting("REALTIME_NOISE_REDUCTION", "near_field", "Noise reduction of the caller's audio: near_field (handsets, headsets), far_field (speakerphones) or none."),
    setting("REALTIME_TRANSCRIPTION_LANGUAGE", "", "Two-letter ISO-639-1 code (en, de, ...) of your callers' language: makes transcripts more accurate. Unset: detected per call."),
    setting("REALTIME_MAX_OUTPUT_TOKENS", "", "Longest response, in tokens (1 to 4096). Unset: no limit."),
    setting("REALTIME_TOOL_TIMEOUT_SECS", "10", "A tool that takes longer (1 to 120 s) gets an error result, so the model tells the caller instead of waiting in silence."),
    setting("REALTIME_OPEN_TIMEOUT_SECS", "8", "How long opening a call's model session (1 to 60 s: the HTTP exchange and the WebRTC connection) may take. An inbound call that has none by then is rejected (the caller is not left with silence); a lost session that cannot be re-established in time ends the call."),
    setting("REALTIME_SESSION_ROLLOVER_SECS", "3300", "A call's model session is replaced by a new one, given the conversation so far, after this many seconds (10 to 3540): OpenAI ends sessions at 60 minutes, so a long call moves to a fresh session before that."),
    // Calls and media
    setting("RTC_UDP_PORT", "40000", "The one UDP port all call media uses; open it to the internet (0: any free port, for tests)."),
    setting("RTC_BIND_ADDRESS", "0.0.0.0", "Address the media socket binds to."),
    setting("RTC_HOST_IP", "the bind address, or this host's outward IP when binding to all", "The IP put in calls' host candidate (the address peers on the same network reach)."),
    setting("RTC_PUBLIC_IP", "", "Public IP for media candidates. Unset: discovered with STUN at start."),
    setting("STUN_SERVER", "stun.l.google.com:19302", "STUN server (host:port) used at start to discover the media socket's public address when RTC_PUBLIC_IP is not set; none to skip."),
    setting("RTC_FAST_RECEIVE", "true", "Decrypt incoming call audio in the bridge's own media loop, with the keys str0m negotiated, instead of through str0m's receive path: less CPU per packet (docs/performance.md). str0m still sends the RTCP receiver reports; the bridge fills in what it received (loss, jitter, highest sequence number, and the echo of the peer's sender report from which the peer measures the round trip). Every SRTP profile DTLS can settle on is covered (AEAD AES-GCM and AES-CM with HMAC-SHA1). false: str0m's own receive path carries the audio (the reference the fast path is tested against)."),
    setting("RTC_FAST_SEND", "true", "Encrypt outgoing call audio in the bridge's own media loop, with the keys str0m negotiated, and send it without str0m's send path: less CPU per packet (docs/performance.md). The packets carry the header extensions the call negotiated (mid, abs-send-time), and the bridge corrects str0m's RTCP sender reports with what it sent. Every SRTP profile DTLS can settle on is covered. false: str0m's own send path carries the audio."),
    setting("RTC_REALTIME_PRIORITY", "false", "Run the call media thread at real-time priority (SCHED_FIFO 10), so audio is not held up behind other work on a busy host. Needs CAP_SYS_NICE (docker run --cap-add SYS_NICE, or systemd AmbientCapabilities=CAP_SYS_NICE); without it the bridge warns and runs at normal priority."),
    setting("MAX_CONCURRENT_CALLS", "100", "Calls held at once; over it new calls are rejected cleanly."),
    setting("VOICE_AGENT", "realtime with AI keys, else echo", "What answers call audio: realtime (OpenAI/Azure), echo (returns the caller's audio) or silence (sends silence; for tests)."),
    setting("ECHO_DELAY_MS", "500", "How long the echo agent waits before returning the caller's audio."),
    setting("CALL_RING_TIMEOUT_SECS", "60", "An outbound call nobody answers ends after this long."),
    setting("CALL_CONNECT_TIMEOUT_SECS", "20", "A call whose media (ICE + DTLS) does not connect within this long ends as failed."),
    setting("CALL_MEDIA_TIMEOUT_SECS", "20", "A connected call that receives no audio for this long ends."),
    setting("CALL_MAX_DURATION_SECS", "3600", "No call lasts longer (OpenAI Realtime sessions end at 60 minutes)."),
    // Operations
    secret("ADMIN_TOKEN", "Bearer token for the admin API (/api/...) and the browser test phone (/phone). Both are off without it (except in DEV_MODE)."),
    setting("DEV_MODE", "auto", "Local development mode for `whatsapp-bridge serve`: HTTP on 127.0.0.1 only (unless BIND_ADDRESS is set), no STUN lookup (unless STUN_SERVER is set), and, without ADMIN_TOKEN, a throwaway admin token printed as the test phone's URL. auto: on when none of ADMIN_TOKEN, WHATSAPP_ACCESS_TOKEN and WHATSAPP_APP_SECRET is set (a first run); true; false."),
    setting("LOG_FORMAT", "json when not a terminal, else pretty", "json or pretty."),
    setting("LOG_LEVEL", "info", "A tracing filter: a level (debug) or directives (info,whatsapp_bridge=debug). RUST_LOG is read too."),
    setting("SHUTDOWN_TIMEOUT_SECS", "25", "On SIGTERM/SIGINT: how long to finish in-flight requests and queued events before stopping anyway (queued events stay stored and run at next start)."),
    setting("EVENT_QUEUE_CAPACITY", "1024", "Webhook events waiting for processing in memory; beyond it they wait in the database."),
    setting("INSTANCE_ID", "the host name", "Names this instance's claims on queued events; must differ between instances running at once. A restarted instance with the same id takes its own claims back at once."),
];

/// The setting called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}
