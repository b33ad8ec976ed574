//! `tdxsim sweep FILE`, `tdxsim sweep merge DIR... --out DIR` and `tdxsim report DIR`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use scenarios::sweep::{self, Partition, Progress, Sweep, SweepOptions, SweepSummary};

use crate::emit;

/// `tdxsim sweep`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    command: Option<SweepCommand>,
    /// The sweep file (docs/sweeps.md).
    #[arg(required = true)]
    file: Option<PathBuf>,
    /// The sweep directory: runs.csv, points.csv, manifest.json, sweep.log, bundles/ [default:
    /// tdxsim-out/<sweep file stem>, or tdxsim-out/<stem>-K-of-N for a partition]. Rerunning
    /// into a directory with a log resumes it.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Worker threads (default: one per core). The files are the same for any number.
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Run only the points whose index is K-1 modulo N (cargo-nextest's syntax); join the
    /// partitions' directories with `tdxsim sweep merge`.
    #[arg(long, value_name = "count:K/N")]
    partition: Option<Partition>,
}

#[derive(clap::Subcommand)]
enum SweepCommand {
    /// Join partition directories of one sweep into the files the whole sweep would write.
    Merge {
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Where the merged sweep goes (a new directory).
        #[arg(long, value_name = "DIR", required = true)]
        out: PathBuf,
    },
}

/// Runs `tdxsim sweep ...`: 0 when the sweep finished (failing runs are data), 2 when the
/// sweep file, its base scenario or the directory's log is refused, 3 when a repro bundle or
/// an output file could not be written.
pub fn sweep(args: SweepArgs) -> u8 {
    if let Some(SweepCommand::Merge { dirs, out }) = args.command {
        return merge(&dirs, &out);
    }
    let file = args.file.expect("clap requires FILE without a subcommand");
    let sweep = match Sweep::load(&file) {
        Ok(sweep) => sweep,
        Err(error) => {
            err!("{error}");
            return error.exit_code();
        }
    };
    let out = args.out.unwrap_or_else(|| default_out(&file, args.partition));
    let options = SweepOptions {
        out: out.clone(),
        jobs: args.jobs,
        partition: args.partition,
        commit: sweep::git_describe(),
    };
    let started = Instant::now();
    let bar = progress_bar();
    let on_progress = |progress: &Progress| {
        if let Some(bar) = &bar {
            bar.set_length(progress.total);
            bar.set_position(progress.done);
            bar.set_message(progress.current.clone());
        }
    };
    let result = sweep::run(&sweep, &options, &on_progress);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            err!("{error}");
            return error.exit_code();
        }
    };
    print_summary(&sweep, &summary, args.partition, &out);
    let seconds = started.elapsed().as_secs_f64();
    err!("{:.1} s, {:.1} runs/s", seconds, summary.runs as f64 / seconds.max(1e-9));
    for error in &summary.bundle_errors {
        err!("tdxsim: could not write a repro bundle: {error}");
    }
    if summary.bundle_errors.is_empty() { 0 } else { crate::code::OUTPUT }
}

/// Where a sweep goes without `--out`: tdxsim-out/<file stem>, or <stem>-K-of-N for a partition.
fn default_out(file: &Path, partition: Option<Partition>) -> PathBuf {
    let stem =
        file.file_stem().map_or_else(|| "sweep".to_string(), |stem| stem.to_string_lossy().into_owned());
    let name = match partition {
        Some(partition) => format!("{stem}-{}-of-{}", partition.index, partition.count),
        None => stem,
    };
    Path::new(crate::DEFAULT_OUT).join(name)
}

/// What a finished sweep prints on standard output: the grid, the failing runs and the files
/// written into `out`.
fn print_summary(sweep: &Sweep, summary: &SweepSummary, partition: Option<Partition>, out: &Path) {
    let partition = partition.map_or(String::new(), |partition| format!(" (partition {partition})"));
    out!(
        "sweep {}{partition}: {} points x {} seeds; {} resumed, {} runs now",
        sweep.path,
        summary.points,
        sweep.seeds.len(),
        summary.resumed,
        summary.runs
    );
    out!(
        "failing runs: {} in {} points ({} points with no passing run: gaps in plots){}",
        summary.failing_runs,
        summary.failing_points,
        summary.empty_points,
        if summary.failing_runs > 0 {
            format!("; bundles in {}", out.join("bundles").display())
        } else {
            String::new()
        }
    );
    for file in &summary.files {
        out!("wrote {}", file.display());
    }
}

fn merge(dirs: &[PathBuf], out: &Path) -> u8 {
    match sweep::merge(dirs, out) {
        Ok(summary) => {
            out!("merged {} directories: {} points", dirs.len(), summary.points);
            for file in &summary.files {
                out!("wrote {}", file.display());
            }
            0
        }
        Err(error) => {
            err!("{error}");
            error.exit_code()
        }
    }
}

/// `tdxsim report DIR`: 0 when written, 2 when DIR is not a sweep directory, 3 when a file
/// could not be written.
pub fn report(dir: &Path) -> u8 {
    match reports::render(dir) {
        Ok(rendered) => {
            for file in &rendered.files {
                out!("wrote {}", file.display());
            }
            for skipped in &rendered.skipped {
                out!("left out: {skipped}");
            }
            0
        }
        Err(error) => {
            err!("{error}");
            match error {
                reports::ReportError::Invalid { .. } => crate::code::BAD_INPUT,
                reports::ReportError::Io { ref path, .. } if !path.exists() => crate::code::BAD_INPUT,
                reports::ReportError::Io { .. } => crate::code::OUTPUT,
            }
        }
    }
}

/// Points done, ETA and the current point on a terminal; nothing in CI logs or pipes.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} points, ETA {eta} | {wide_msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    Some(bar)
}
