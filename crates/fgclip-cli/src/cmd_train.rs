//! `fgclip train`: the papers' training objectives on FineHARD-layout data (see `fgclip_train::config` for the
//! TOML file). Progress goes to stderr; the summary (and with `--json`, a JSON line) to stdout.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use fgclip_train::config::TrainConfig;

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// TOML configuration file ([model], [data], [train], [output]).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Override a setting: `--set train.lr=1e-5 --set output.dir=runs/x` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the resolved configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let cfg = TrainConfig::load(a.config.as_deref(), &a.set).context("training configuration")?;
    if a.print_config {
        print!("{}", cfg.to_toml()?);
        return Ok(());
    }
    crate::common::keep_freed_memory_for_reuse();
    let summary = fgclip_train::run::run(&cfg, !a.quiet).context("training")?;
    if a.json {
        let v = serde_json::json!({
            "steps": summary.steps,
            "final": summary.final_dir,
            "resumed_from": summary.resumed_from,
            "last": summary.last,
        });
        println!("{v}");
    } else {
        if let Some(p) = &summary.resumed_from {
            println!("resumed from {}", p.display());
        }
        if let Some(l) = &summary.last {
            println!("step {}  loss {:.4}  lr {:.2e}  {:.1} samples/s", l.step, l.loss, l.lr, l.samples_per_s);
        }
        println!("{} updates; model written to {}", summary.steps, summary.final_dir.display());
    }
    Ok(())
}
