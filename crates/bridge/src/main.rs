//! The `whatsapp-bridge` binary: parse the command line and settings, start logging, run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use whatsapp_bridge::cli::{Cli, Command};
use whatsapp_bridge::config::{Config, LoadOptions};
use whatsapp_bridge::store::{SqlStore, Store};
use whatsapp_bridge::{telemetry, App};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = LoadOptions {
        config_file: cli.config.clone(),
        dotenv_file: Some(".env".into()),
    };
    // Non-UTF-8 variables cannot be ours; skip them rather than panic.
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = match Config::load(&options, env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("whatsapp-bridge cannot start: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = telemetry::init_logging(&config.log) {
        eprintln!("whatsapp-bridge cannot start: {err:#}");
        return ExitCode::from(2);
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("whatsapp-bridge cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => migrate(config).await,
            Command::Call {
                to,
                purpose,
                reminder,
                url,
            } => place_call(config, to, purpose, reminder, url).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "whatsapp-bridge stopped with an error"
            );
            eprintln!("whatsapp-bridge: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
async fn serve(mut config: Config) -> anyhow::Result<()> {
    let dev = config.enter_local_dev();
    let disabled = config.disabled_features();
    let database = config.database.url.redacted();
    let has_admin_token = config.admin_token.is_some();
    let app = App::build(config).await?;
    let addr = app.http_addr();
    let local = format!("http://127.0.0.1:{}", addr.port());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        %addr,
        %database,
        "whatsapp-bridge is running. Health: {local}/health · metrics: {local}/metrics · \
         Meta webhook callback URL: https://<your public host>/whatsapp-call"
    );
    for feature in disabled {
        tracing::warn!("off until configured: {feature}");
    }
    match &dev {
        Some(dev) => tracing::info!(
            throwaway_admin_token = dev.generated_token.is_some(),
            "local development mode (DEV_MODE): HTTP on {addr} only, no STUN lookup; \
             set ADMIN_TOKEN and the WhatsApp settings (or DEV_MODE=false) for a deployment"
        ),
        None if has_admin_token => {
            tracing::info!("browser test phone: {local}/phone (it asks for ADMIN_TOKEN)")
        }
        None => {}
    }
    // The one thing to do next, last and on stdout so it is not lost among the log lines. A
    // throwaway token is printed (it dies with this process, and only loopback can use it);
    // an operator's ADMIN_TOKEN never is.
    if let Some(token) = dev.as_ref().and_then(|d| d.generated_token.as_ref()) {
        use secrecy::ExposeSecret;
        println!(
            "\nTest phone: open {local}/phone#token={} and press Call.\n",
            token.expose_secret()
        );
    }
    app.run_until_stopped(shutdown_signal()).await
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let database = config.database.url.redacted();
    let store = SqlStore::connect(&config.database)
        .await
        .with_context(|| format!("cannot open the database {database}"))?;
    store
        .migrate()
        .await
        .context("cannot apply the migrations")?;
    let status = store.migration_status().await?;
    tracing::info!(%database, applied = status.applied, known = status.known, "database schema is current");
    store.close().await;
    Ok(())
}

/// `whatsapp-bridge call`: POST /api/calls on the running service; prints its answer.
#[allow(clippy::print_stdout)]
async fn place_call(
    config: Config,
    to: String,
    purpose: Option<String>,
    reminder: Option<i64>,
    url: Option<String>,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let token = config
        .admin_token
        .as_ref()
        .context("set ADMIN_TOKEN to the running service's admin token")?;
    let base = url.unwrap_or_else(|| format!("http://127.0.0.1:{}", config.http.port));
    let response = reqwest::Client::new()
        .post(format!("{}/api/calls", base.trim_end_matches('/')))
        .bearer_auth(token.expose_secret())
        .json(&serde_json::json!({"to": to, "purpose": purpose, "reminder_id": reminder}))
        .send()
        .await
        .with_context(|| format!("cannot reach the service at {base}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .context("cannot read the service's answer")?;
    if status.is_success() {
        println!("{body}");
        Ok(())
    } else {
        anyhow::bail!("the service answered {status}: {body}")
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (`docker stop`, Kubernetes, systemd).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
