//! `smoothgrad`: explain an image classifier's decisions with SmoothGrad and its relatives.
//!
//! ```text
//! smoothgrad explain --model digits.onnx --image seven.png --method smoothgrad --png map.png
//! smoothgrad demo --out-dir demo-output
//! smoothgrad train --out shapes-cnn.safetensors && smoothgrad evaluate --model shapes-cnn.safetensors
//! ```
//!
//! Every error ends the program with one line on stderr saying why and a status that says what
//! kind of failure it was (see [`exit::Status`]: 2 usage, 3 bad input file, 4 numerical fault,
//! 5 limit exceeded, 1 anything else); every output file is written atomically (temporary file,
//! then rename).

mod bench;
mod common;
mod demo;
mod exit;
mod explain;
mod quality;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Explain image classifiers with SmoothGrad, from scratch.
#[derive(Debug, Parser)]
#[command(
    name = "smoothgrad",
    version,
    about,
    max_term_width = 100,
    after_help = exit::EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain one or more inputs: print the top-5 predictions and write attribution maps.
    Explain(Box<explain::ExplainArgs>),
    /// Explain the bundled digits model on its bundled images with every method, as a figure.
    Demo(demo::DemoArgs),
    /// Write images of the ground-truth shapes benchmark with their object masks.
    Dataset(quality::DatasetArgs),
    /// Train the benchmark's CNN with our own engine and save it as safetensors + JSON.
    Train(quality::TrainArgs),
    /// Measure explanation quality on the benchmark: the method table, the sweeps and plots.
    Evaluate(quality::EvaluateArgs),
    /// Time one explanation of a model end to end: time per image, GFLOP/s, memory.
    Bench(Box<bench::BenchArgs>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Explain(args) => explain::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Dataset(args) => quality::run_dataset(&args),
        Command::Train(args) => quality::run_train(&args),
        Command::Evaluate(args) => quality::run_evaluate(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the chain of causes with ": " on one line.
            let mut line = one_line(&format!("{e:#}"));
            if let Some(flag) = exit::limit_hint(&e) {
                line.push_str(&format!("; raise it with {flag}"));
            }
            eprintln!("error: {line}");
            exit::status_of(&e).code()
        }
    }
}

/// Help and version go out as clap writes them; usage errors become one line, exit status 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        _ => {
            let text = e.render().to_string();
            let kept: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect();
            let line = kept.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("error: {line} (see smoothgrad --help)");
            exit::Status::Usage.code()
        }
    }
}

/// `text` with its line breaks replaced by spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
