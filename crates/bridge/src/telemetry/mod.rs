//! Logs and metrics: part of the service's interface, in one place.
//!
//! - [`init_logging`]: `tracing` with JSON lines (production) or pretty output (a terminal).
//! - [`Metrics`]: the Prometheus registry of one `App` (not a global, so tests running several
//!   apps in one process see their own numbers). Names are listed in `docs/metrics.md`.
//! - [`Masked`]: how phone numbers appear in logs (last four digits only).

mod metrics;

use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt as tfmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};
use crate::domain::WaId;

pub use metrics::{DbTimer, Metrics};

/// Installs the global `tracing` subscriber.
///
/// # Errors
/// When the filter does not parse or a subscriber is already installed.
pub fn init_logging(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|e| anyhow::anyhow!("LOG_LEVEL {:?} is not a valid filter: {e}", config.filter))?;
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(
                tfmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?;
    } else {
        registry
            .with(
                tfmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init()?;
    }
    Ok(())
}

/// A phone number as logs show it: `***1234`.
pub struct Masked<'a>(pub &'a WaId);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "***{}", self.0.last4())
    }
}

/// Masks an optional phone number for a log field (`-` when absent).
pub fn masked(wa_id: Option<&WaId>) -> String {
    wa_id.map_or_else(|| "-".to_owned(), |id| Masked(id).to_string())
}
