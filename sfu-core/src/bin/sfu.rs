//! `sfu`: the SFU alone, from a TOML config (the code cloud nodes run).
//!
//! ```text
//! sfu --config sfu.toml
//! ```
//! The file's keys are documented in [`sfu_core::standalone`]; unknown keys are
//! refused. SIGTERM or Ctrl-C shuts down gracefully.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(name = "sfu", about = "roombox's SFU alone: WHIP, WHEP and the room protocol over one UDP port")]
struct Args {
    /// TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// Only check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn".into()),
        )
        .init();
    let args = Args::parse();
    if args.check {
        sfu_core::standalone::check_config(&args.config)?;
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    sfu_core::standalone::run_from_config(&args.config)
}
