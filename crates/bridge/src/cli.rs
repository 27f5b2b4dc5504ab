//! The command line: `whatsapp-bridge [serve]`, `migrate`.

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
}
