use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(&LoadOptions::default(), env(pairs))
}

fn secret_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(contents.as_bytes()).expect("write");
    file
}

#[test]
fn an_empty_environment_starts_a_local_service_on_the_documented_defaults() {
    let config = load(&[]).expect("defaults are valid");
    assert_eq!(config.http.port, 3011);
    assert_eq!(config.database.url.backend(), DatabaseBackend::Sqlite);
    assert_eq!(
        config.database.url.expose(),
        "sqlite://data/whatsapp-bridge.db"
    );
    assert_eq!(config.whatsapp.api_version, "v23.0");
    assert_eq!(
        config.whatsapp.graph_url.as_str(),
        "https://graph.facebook.com/"
    );
    assert_eq!(config.calls.max_concurrent_calls, 100);
    assert_eq!(config.calls.voice_agent, VoiceAgentKind::Echo);
    assert_eq!(config.http.rate_limit.per_second.get(), 10);
    assert_eq!(config.http.rate_limit.burst.get(), 20);
    assert!(config.whatsapp.graph.is_none());
    assert!(config.warnings.is_empty());
    let off = config.disabled_features().join("\n");
    for name in [
        "WHATSAPP_ACCESS_TOKEN",
        "WHATSAPP_APP_SECRET",
        "WHATSAPP_VERIFY_TOKEN",
        "ADMIN_TOKEN",
        "OPENAI_API_KEY",
    ] {
        assert!(off.contains(name), "{name} missing from: {off}");
    }
}

#[test]
fn every_problem_is_listed_at_once() {
    let err = load(&[
        ("PORT", "abc"),
        ("DATABASE_URL", "mysql://localhost/db"),
        ("LOG_FORMAT", "xml"),
        ("WHATSAPP_ACCESS_TOKEN", "token"),
        ("RATE_LIMIT_BURST", "0"),
        ("WEBHOOK_RETENTION_DAYS", "1"),
        ("WHATSAPP_API_VERSION", "23"),
        ("VOICE_AGENT", "realtime"),
    ])
    .expect_err("invalid");
    let text = err.to_string();
    for name in [
        "PORT",
        "DATABASE_URL",
        "LOG_FORMAT",
        "WHATSAPP_PHONE_NUMBER_ID",
        "RATE_LIMIT_BURST",
        "WEBHOOK_RETENTION_DAYS",
        "WHATSAPP_API_VERSION",
        "VOICE_AGENT",
    ] {
        assert!(
            err.problems.iter().any(|p| p.starts_with(name)),
            "{name} not reported in:\n{text}"
        );
    }
    assert!(
        text.starts_with("the configuration has 8 problems:"),
        "{text}"
    );
}

#[test]
fn the_go_precedents_names_work_with_a_deprecation_warning() {
    let config = load(&[
        ("WHATSAPP_TOKEN", "old-token"),
        ("PHONE_NUMBER_ID", "106540352242922"),
        ("VERIFY_TOKEN", "old-verify"),
    ])
    .expect("aliases are accepted");
    let graph = config.whatsapp.graph.expect("graph configured");
    assert_eq!(graph.access_token.expose_secret(), "old-token");
    assert_eq!(graph.phone_number_id.as_str(), "106540352242922");
    assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
    assert!(config
        .warnings
        .iter()
        .any(|w| w.contains("rename it to WHATSAPP_ACCESS_TOKEN")));
}

#[test]
fn the_new_name_wins_over_its_alias() {
    let config = load(&[("WHATSAPP_VERIFY_TOKEN", "new"), ("VERIFY_TOKEN", "old")]).expect("valid");
    assert_eq!(
        config.whatsapp.verify_token.expect("set").expose_secret(),
        "new"
    );
    assert!(config.warnings.is_empty());
}

#[test]
fn secrets_can_come_from_files() {
    let file = secret_file("s3cret\n");
    let path = file.path().to_str().expect("utf-8 path");
    let config = load(&[("WHATSAPP_APP_SECRET_FILE", path)]).expect("valid");
    assert_eq!(
        config.whatsapp.app_secret.expect("set").expose_secret(),
        "s3cret"
    );
}

#[test]
fn a_secret_file_that_is_missing_or_doubled_is_a_problem() {
    let err = load(&[("ADMIN_TOKEN_FILE", "/nonexistent/admin-token")]).expect_err("missing file");
    assert!(
        err.problems[0].contains("cannot read /nonexistent/admin-token"),
        "{err}"
    );

    let file = secret_file("x");
    let path = file.path().to_str().expect("utf-8 path");
    let err = load(&[("ADMIN_TOKEN", "y"), ("ADMIN_TOKEN_FILE", path)]).expect_err("both");
    assert!(err.problems[0].contains("keep one"), "{err}");
}

#[test]
fn secrets_never_print() {
    let config = load(&[
        ("WHATSAPP_ACCESS_TOKEN", "EAAG-very-secret"),
        ("WHATSAPP_PHONE_NUMBER_ID", "106540352242922"),
        ("WHATSAPP_APP_SECRET", "app-secret-value"),
        ("ADMIN_TOKEN", "admin-secret-value"),
        ("OPENAI_API_KEY", "sk-secret-value"),
        (
            "DATABASE_URL",
            "postgres://bridge:pg-password@db.example.com:5432/bridge",
        ),
    ])
    .expect("valid");
    let printed = format!("{config:?}");
    for secret in [
        "EAAG-very-secret",
        "app-secret-value",
        "admin-secret-value",
        "sk-secret-value",
        "pg-password",
    ] {
        assert!(!printed.contains(secret), "{secret} printed");
    }
    assert_eq!(
        config.database.url.redacted(),
        "postgres://bridge:***@db.example.com:5432/bridge"
    );
    // An invalid secret is reported without its value.
    let err = load(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]).expect_err("invalid");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn a_toml_file_sets_values_and_the_environment_overrides_it() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(
        &path,
        "port = 8080\nLOG_FORMAT = \"pretty\"\nallow_unsigned_webhooks = true\n",
    )
    .expect("write");
    let options = LoadOptions {
        config_file: Some(path),
        dotenv_file: None,
    };
    let config = Config::load(&options, env(&[("PORT", "9090")])).expect("valid");
    assert_eq!(config.http.port, 9090);
    assert_eq!(config.log.format, LogFormat::Pretty);
    assert!(config.whatsapp.allow_unsigned_webhooks);
}

#[test]
fn a_toml_file_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, "prot = 8080\n").expect("write");
    let options = LoadOptions {
        config_file: Some(path),
        dotenv_file: None,
    };
    let err = Config::load(&options, env(&[])).expect_err("typo");
    assert!(err.problems[0].contains("prot"), "{err}");
    assert!(err.problems[0].contains("unknown setting"), "{err}");
}

#[test]
fn dotenv_fills_in_but_never_overrides_the_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join(".env");
    std::fs::write(&path, "PORT=4000\nMAX_CONCURRENT_CALLS=7\nADMIN_TOKEN=\n").expect("write");
    let options = LoadOptions {
        config_file: None,
        dotenv_file: Some(path),
    };
    let config = Config::load(&options, env(&[("PORT", "5000")])).expect("valid");
    assert_eq!(config.http.port, 5000);
    assert_eq!(config.calls.max_concurrent_calls, 7);
    assert!(config.admin_token.is_none(), "an empty value is unset");
}

#[test]
fn ai_keys_select_the_realtime_agent_and_the_provider() {
    let config = load(&[("OPENAI_API_KEY", "sk-x")]).expect("valid");
    assert_eq!(config.calls.voice_agent, VoiceAgentKind::Realtime);
    assert!(matches!(
        config.ai.provider,
        Some(AiProvider::OpenAi { .. })
    ));

    let config = load(&[
        ("AZURE_OPENAI_API_KEY", "az"),
        ("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com"),
        ("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime"),
        ("OPENAI_API_KEY", "sk-x"),
    ])
    .expect("valid");
    assert!(matches!(config.ai.provider, Some(AiProvider::Azure { .. })));

    let err = load(&[
        ("AZURE_OPENAI_API_KEY", "az"),
        ("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com"),
    ])
    .expect_err("realtime on Azure needs a deployment");
    assert!(
        err.problems[0].starts_with("AZURE_OPENAI_DEPLOYMENT"),
        "{err}"
    );
    let config = load(&[
        ("AZURE_OPENAI_API_KEY", "az"),
        ("AZURE_OPENAI_ENDPOINT", "https://r.openai.azure.com"),
        ("VOICE_AGENT", "echo"),
    ])
    .expect("echo needs no deployment");
    assert_eq!(config.calls.voice_agent, VoiceAgentKind::Echo);
}

#[test]
fn every_setting_is_documented_in_the_configuration_reference() {
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/configuration.md"
    ))
    .expect("docs/configuration.md exists");
    for name in setting_names() {
        assert!(
            reference.contains(&format!("`{name}`")),
            "docs/configuration.md does not document `{name}`"
        );
    }
    for (_, old) in ALIASES {
        assert!(
            reference.contains(old),
            "docs/configuration.md does not mention alias {old}"
        );
    }
}

#[test]
fn the_voice_session_defaults_suit_a_phone_call() {
    let config = load(&[]).expect("defaults are valid");
    let realtime = &config.realtime;
    assert_eq!(realtime.voice.as_str(), "marin");
    assert_eq!(realtime.speed, None);
    assert_eq!(
        realtime.turn_detection,
        Some(TurnDetection::ServerVad {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            idle_timeout_ms: None,
            create_response: true,
            interrupt_response: true,
        })
    );
    assert_eq!(realtime.noise_reduction, Some(NoiseReduction::NearField));
    assert_eq!(realtime.transcription_language, None);
    assert_eq!(realtime.max_output_tokens, None);
    assert_eq!(realtime.tool_timeout, Duration::from_secs(10));

    let assistant = &config.assistant;
    assert_eq!(assistant.name, "Ziggy");
    assert!(assistant.instructions.is_none(), "the built-in persona");
    assert_eq!(
        assistant.disclosure.as_deref(),
        Some("Hi, this is Ziggy, an AI assistant. This call may be recorded.")
    );
    assert_eq!(assistant.default_time_zone, chrono_tz::Tz::UTC);
}

#[test]
fn voice_session_settings_are_read() {
    let config = load(&[
        ("REALTIME_VOICE", "Cedar"),
        ("REALTIME_VOICE_SPEED", "1.1"),
        ("REALTIME_TURN_DETECTION", "semantic_vad"),
        ("REALTIME_VAD_EAGERNESS", "low"),
        ("REALTIME_NOISE_REDUCTION", "far_field"),
        ("REALTIME_TRANSCRIPTION_LANGUAGE", "DE"),
        ("REALTIME_MAX_OUTPUT_TOKENS", "1024"),
        ("REALTIME_TOOL_TIMEOUT_SECS", "20"),
        ("ASSISTANT_NAME", "Max"),
        ("DEFAULT_TIME_ZONE", "America/New_York"),
    ])
    .expect("valid");
    let realtime = &config.realtime;
    assert_eq!(realtime.voice.as_str(), "cedar");
    assert_eq!(realtime.speed, Some(1.1));
    assert_eq!(
        realtime.turn_detection,
        Some(TurnDetection::SemanticVad {
            eagerness: Eagerness::Low,
            create_response: true,
            interrupt_response: true,
        })
    );
    assert_eq!(realtime.noise_reduction, Some(NoiseReduction::FarField));
    assert_eq!(realtime.transcription_language.as_deref(), Some("de"));
    assert_eq!(realtime.max_output_tokens, Some(1024));
    assert_eq!(realtime.tool_timeout, Duration::from_secs(20));
    assert_eq!(
        config.assistant.disclosure.as_deref(),
        Some("Hi, this is Max, an AI assistant. This call may be recorded."),
        "the default disclosure names the assistant"
    );
    assert_eq!(
        config.assistant.default_time_zone,
        chrono_tz::America::New_York
    );

    let config = load(&[
        ("REALTIME_TURN_DETECTION", "server_vad"),
        ("REALTIME_VAD_THRESHOLD", "0.7"),
        ("REALTIME_VAD_SILENCE_MS", "800"),
        ("REALTIME_VAD_PREFIX_PADDING_MS", "200"),
        ("REALTIME_VAD_IDLE_TIMEOUT_MS", "15000"),
        ("REALTIME_NOISE_REDUCTION", "none"),
        ("ASSISTANT_DISCLOSURE", "none"),
    ])
    .expect("valid");
    assert_eq!(
        config.realtime.turn_detection,
        Some(TurnDetection::ServerVad {
            threshold: 0.7,
            prefix_padding_ms: 200,
            silence_duration_ms: 800,
            idle_timeout_ms: Some(15_000),
            create_response: true,
            interrupt_response: true,
        })
    );
    assert_eq!(config.realtime.noise_reduction, None);
    assert_eq!(config.assistant.disclosure, None, "none disables it");

    let config = load(&[("REALTIME_TURN_DETECTION", "none")]).expect("valid");
    assert_eq!(config.realtime.turn_detection, None);
}

#[test]
fn invalid_voice_session_settings_are_all_reported() {
    let err = load(&[
        ("REALTIME_VOICE", "nova"),
        ("REALTIME_VOICE_SPEED", "3"),
        ("REALTIME_TURN_DETECTION", "push_to_talk"),
        ("REALTIME_VAD_THRESHOLD", "1.5"),
        ("REALTIME_VAD_SILENCE_MS", "abc"),
        ("REALTIME_VAD_IDLE_TIMEOUT_MS", "100"),
        ("REALTIME_VAD_EAGERNESS", "eager"),
        ("REALTIME_NOISE_REDUCTION", "loud"),
        ("REALTIME_TRANSCRIPTION_LANGUAGE", "english"),
        ("REALTIME_MAX_OUTPUT_TOKENS", "0"),
        ("REALTIME_TOOL_TIMEOUT_SECS", "0"),
        (
            "ASSISTANT_NAME",
            "A name far too long to be said at the start of every call",
        ),
        ("ASSISTANT_INSTRUCTIONS_FILE", "/nonexistent/persona.md"),
        ("DEFAULT_TIME_ZONE", "Mars/Olympus_Mons"),
    ])
    .expect_err("invalid");
    let text = err.to_string();
    for name in [
        "REALTIME_VOICE ",
        "REALTIME_VOICE_SPEED",
        "REALTIME_TURN_DETECTION",
        "REALTIME_VAD_THRESHOLD",
        "REALTIME_VAD_SILENCE_MS",
        "REALTIME_VAD_IDLE_TIMEOUT_MS",
        "REALTIME_VAD_EAGERNESS",
        "REALTIME_NOISE_REDUCTION",
        "REALTIME_TRANSCRIPTION_LANGUAGE",
        "REALTIME_MAX_OUTPUT_TOKENS",
        "REALTIME_TOOL_TIMEOUT_SECS",
        "ASSISTANT_NAME",
        "ASSISTANT_INSTRUCTIONS_FILE",
        "DEFAULT_TIME_ZONE",
    ] {
        assert!(
            err.problems.iter().any(|p| p.starts_with(name)),
            "{name} not reported in:\n{text}"
        );
    }
    assert_eq!(err.problems.len(), 14, "{text}");
    assert!(text.contains("marin"), "the voices are listed: {text}");
}

#[test]
fn a_persona_file_replaces_the_built_in_one_and_is_checked() {
    let file = secret_file("You are {{assistant_name}}, a concierge. It is {{local_time}}.");
    let path = file.path().to_str().expect("utf-8 path");
    let config = load(&[("ASSISTANT_INSTRUCTIONS_FILE", path)]).expect("valid");
    assert!(config.assistant.instructions.is_some());

    let file = secret_file("You are {{name}}.");
    let path = file.path().to_str().expect("utf-8 path");
    let err = load(&[("ASSISTANT_INSTRUCTIONS_FILE", path)]).expect_err("unknown placeholder");
    assert!(
        err.problems[0].starts_with("ASSISTANT_INSTRUCTIONS_FILE")
            && err.problems[0].contains("{{name}}"),
        "{err}"
    );
}

#[test]
fn a_first_run_is_a_local_development_service_with_a_throwaway_token_on_loopback() {
    let mut config = load(&[]).expect("defaults are valid");
    assert!(config.is_local_dev());
    assert!(
        config.admin_token.is_none(),
        "loading alone changes nothing"
    );
    let dev = config.enter_local_dev().expect("dev mode");
    let token = dev.generated_token.expect("a throwaway token");
    assert_eq!(token.expose_secret().len(), 32);
    assert_eq!(
        config
            .admin_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some(token.expose_secret().to_owned())
    );
    assert_eq!(config.http.bind_address, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(config.calls.stun_server, None);

    // Two runs, two tokens.
    let mut again = load(&[]).expect("valid");
    let other = again.enter_local_dev().and_then(|d| d.generated_token);
    assert_ne!(
        other.map(|t| t.expose_secret().to_owned()),
        Some(token.expose_secret().to_owned())
    );
}

#[test]
fn a_deployment_is_never_in_development_mode_and_explicit_settings_are_kept() {
    // Any of the settings a deployment has turns the automatic mode off.
    for set in [
        ("ADMIN_TOKEN", "operator-token"),
        ("WHATSAPP_APP_SECRET", "secret"),
    ] {
        let mut config = load(&[set]).expect("valid");
        assert!(!config.is_local_dev(), "{set:?}");
        assert!(config.enter_local_dev().is_none());
        assert_eq!(config.http.bind_address, IpAddr::from([0, 0, 0, 0]));
    }
    let mut off = load(&[("DEV_MODE", "false")]).expect("valid");
    assert!(off.enter_local_dev().is_none());
    assert!(off.admin_token.is_none());

    // Forced on with an operator's token: the token is theirs (none is made, none printed),
    // and what they set explicitly stays.
    let mut on = load(&[
        ("DEV_MODE", "true"),
        ("ADMIN_TOKEN", "operator-token"),
        ("BIND_ADDRESS", "0.0.0.0"),
        ("STUN_SERVER", "stun.example.org:3478"),
    ])
    .expect("valid");
    let dev = on.enter_local_dev().expect("on");
    assert!(dev.generated_token.is_none());
    assert_eq!(on.http.bind_address, IpAddr::from([0, 0, 0, 0]));
    assert_eq!(
        on.calls.stun_server.as_deref(),
        Some("stun.example.org:3478")
    );

    let err = load(&[("DEV_MODE", "maybe")]).expect_err("refused");
    assert!(err.to_string().contains("DEV_MODE"), "{err}");
}
