//! The command line: `whatsapp-bridge [serve]`, `migrate`, `call`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// An AI assistant on a WhatsApp Business number: calls, chat, tasks, reminders and notes.
///
/// Settings come from the environment (and `.env`, and `--config FILE`); see
/// docs/configuration.md.
#[derive(Debug, Parser)]
#[command(name = "whatsapp-bridge", version)]
pub struct Cli {
    /// A TOML file with settings (same names as the environment variables).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations and exit (the service also applies them at start).
    Migrate,
    /// Place a WhatsApp call from the running service (its admin API; needs ADMIN_TOKEN).
    Call {
        /// The WhatsApp id (phone number in international format) to call.
        #[arg(long)]
        to: String,
        /// Why we call (kept on the call record; the assistant is told, and says why it calls).
        #[arg(long)]
        purpose: Option<String>,
        /// A reminder of the callee's (its id) for the assistant to deliver on the call.
        #[arg(long)]
        reminder: Option<i64>,
        /// The service's base URL (default: http://127.0.0.1:$PORT).
        #[arg(long)]
        url: Option<String>,
    },
}
