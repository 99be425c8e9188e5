//! `fgclip`: the command line of fgclip-rs. `main` parses; each subcommand lives in its own file and calls
//! the library. Human output by default, `--json` for machines; errors go to stderr with a non-zero exit.

mod cmd_bench;
mod cmd_boxes;
mod cmd_classify;
mod cmd_convert;
mod cmd_eval;
mod cmd_eval_search;
mod cmd_features;
mod cmd_heatmap;
mod cmd_index;
mod cmd_info;
mod cmd_search;
mod cmd_synth;
mod cmd_train;
mod common;
mod draw;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fgclip",
    version,
    about = "FG-CLIP and FG-CLIP 2 (fine-grained CLIP) in Rust: features, zero-shot, boxes, heatmaps"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log more (repeat for more detail); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Subcommand)]
enum Command {
    /// Compute image / text / region / dense features and write them to a safetensors file.
    Features(cmd_features::Args),
    /// Zero-shot classification of images against labels.
    Classify(cmd_classify::Args),
    /// Label boxes in an image (open-vocabulary box labelling); optionally draw them.
    Boxes(cmd_boxes::Args),
    /// Similarity heatmap of a text query over an image's patches, written as a PNG overlay.
    Heatmap(cmd_heatmap::Args),
    /// Measure images/s and texts/s at the released models' real sizes (random weights).
    Bench(cmd_bench::Args),
    /// Train or fine-tune with the papers' objectives (FineHARD-layout data, TOML config; resumes by itself).
    Train(cmd_train::Args),
    /// Render a synthetic fine-grained dataset (FineHARD layout + FG-OVD-style held-out file), no download.
    Synth(cmd_synth::Args),
    /// FG-OVD fine-grained top-1 accuracy of a model on an FG-OVD jsonl file (real benchmark or synthetic).
    #[command(name = "eval-fgovd")]
    EvalFgovd(cmd_eval::Args),
    /// Region hit@k of an index on records with boxes (e.g. synth's test.json) against two baselines.
    #[command(name = "eval-search")]
    EvalSearch(cmd_eval_search::Args),
    /// Turn a CLIP / SigLIP 2 model into an FG-CLIP / FG-CLIP 2 checkpoint (the official stage-2 initialisation).
    #[command(name = "convert-backbone")]
    ConvertBackbone(cmd_convert::Args),
    /// Index folders of photos (images and region candidates) for `fgclip search`; incremental, resumable.
    Index(cmd_index::Args),
    /// Search an index in English or Chinese (or with a photo): images and boxes.
    Search(cmd_search::Args),
    /// Describe a checkpoint: family, sizes, embedding dimension, text lengths, patch budgets.
    Info(cmd_info::Args),
}

/// Output piped into `head` and the like: die quietly on a closed pipe, as Unix tools do, instead of Rust's
/// default (SIGPIPE ignored, so `println!` panics with "failed printing to stdout").
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    default_sigpipe();
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match cli.command {
        Command::Features(a) => cmd_features::run(a),
        Command::Classify(a) => cmd_classify::run(a),
        Command::Boxes(a) => cmd_boxes::run(a),
        Command::Heatmap(a) => cmd_heatmap::run(a),
        Command::Index(a) => cmd_index::run(a),
        Command::Search(a) => cmd_search::run(a),
        Command::Info(a) => cmd_info::run(a),
        Command::Bench(a) => cmd_bench::run(a),
        Command::Train(a) => cmd_train::run(a),
        Command::Synth(a) => cmd_synth::run(a),
        Command::EvalFgovd(a) => cmd_eval::run(a),
        Command::EvalSearch(a) => cmd_eval_search::run(a),
        Command::ConvertBackbone(a) => cmd_convert::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
