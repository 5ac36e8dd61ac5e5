//! `mandate test`: the pack's YAML test suites run, reported for people,
//! tools or CI, with policy coverage when asked: a gate for policy changes.

use std::path::PathBuf;

use clap::Args;
use mandate::app;
use mandate::config::Config;
use mandate::tools::suite;

use super::{ExitCode, OrExit, Outcome, PackArgs, error, runtime};

/// What `test` runs: the pack, the suites, and how to report them.
#[derive(Args)]
pub struct TestArgs {
    #[command(flatten)]
    config: PackArgs,
    /// Suite files or directories of them.
    #[arg(default_value = "tests/policies")]
    paths: Vec<PathBuf>,
    /// Run only the cases whose name, suite name or rule contains this text.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// How to report: `text` for people, `json` (one object per case, then a
    /// summary), `junit` (JUnit XML, for CI test reports).
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Report policy coverage: per policy, the cases it determined and how
    /// many evaluated its condition; the policies no case exercised.
    #[arg(long)]
    coverage: bool,
    /// Fail (exit 1) when fewer than PCT percent of the policies determined
    /// some passing case (implies `--coverage`).
    #[arg(long, value_name = "PCT", value_parser = percent)]
    min_coverage: Option<f64>,
}

/// A percentage, 0 to 100.
fn percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err("a percentage from 0 to 100".to_owned()),
    }
}

/// `--format`, as the command line spells it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Junit,
}

/// Runs every suite under the paths: exit 0 when every case passed (and
/// coverage reached `--min-coverage`), 1 when not, 2 when a suite could
/// not run.
pub fn run(args: &TestArgs) -> Outcome {
    let config = args.config.load(ExitCode::Usage)?;
    let rt = runtime()?;
    let format = match args.format {
        FormatArg::Text => suite::Format::Text,
        FormatArg::Json => suite::Format::Json,
        FormatArg::Junit => suite::Format::Junit,
    };
    let options = suite::Options {
        coverage: args.coverage || args.min_coverage.is_some(),
    };
    let mut coverage = if options.coverage {
        Some(coverage_of(&config)?)
    } else {
        None
    };
    let filter = suite::Filter::new(args.filter.as_deref());
    let mut out = suite::Report::new(format, std::io::stdout().lock());
    for root in &args.paths {
        for file in suite::discover(root).or_exit(ExitCode::Usage)? {
            let results = rt
                .block_on(suite::run(&file, &config, &filter, options))
                .or_exit(ExitCode::Usage)?;
            for result in results {
                if let Some(coverage) = &mut coverage {
                    coverage.add(&result);
                }
                out.case(result).map_err(cannot_write)?;
            }
        }
    }
    let counts = out.finish().map_err(cannot_write)?;
    let below = coverage.as_ref().and_then(|coverage| {
        print_coverage(coverage, format);
        below_minimum(coverage, args.min_coverage?)
    });
    Ok(verdict(counts, below, args.filter.is_some()))
}

/// The coverage to count, over every policy of the pack.
fn coverage_of(config: &Config) -> Result<suite::Coverage, ExitCode> {
    let snapshot = mandate::policy::load(&app::policy_sources(config)).or_exit(ExitCode::Usage)?;
    Ok(suite::Coverage::new(
        snapshot.policies().policies().map(|p| p.id().to_string()),
    ))
}

/// A report that cannot be written: the suites cannot run.
fn cannot_write(error: std::io::Error) -> ExitCode {
    self::error(
        ExitCode::Usage,
        format_args!("cannot write the report: {error}"),
    )
}

/// The error to print when coverage is below `min` percent.
fn below_minimum(coverage: &suite::Coverage, min: f64) -> Option<String> {
    (coverage.percent() < min).then(|| {
        format!(
            "error: policy coverage {:.1}% is below --min-coverage {min}: no passing case is decided by {}",
            coverage.percent(),
            coverage.uncovered().join(", ")
        )
    })
}

/// The exit code of `counts` (passed, failed): a run where no case ran, or
/// coverage is `below` the minimum, fails too.
fn verdict(counts: (usize, usize), below: Option<String>, filtered: bool) -> ExitCode {
    match counts {
        (0, 0) => {
            eprintln!(
                "error: no case ran{}",
                if filtered {
                    " (nothing matched `--filter`)"
                } else {
                    ""
                }
            );
            ExitCode::No
        }
        (_, failed) => {
            if let Some(message) = &below {
                eprintln!("{message}");
            }
            if failed == 0 && below.is_none() {
                ExitCode::Success
            } else {
                ExitCode::No
            }
        }
    }
}

/// Coverage after the report: on stdout as a table (text) or one JSON line
/// (json); on stderr beside JUnit XML, which must stay one document.
fn print_coverage(coverage: &suite::Coverage, format: suite::Format) {
    use std::io::Write as _;
    let written = match format {
        suite::Format::Text => coverage.write_text(&mut std::io::stdout().lock()),
        suite::Format::Json => writeln!(std::io::stdout().lock(), "{}", coverage.to_json()),
        suite::Format::Junit => coverage.write_text(&mut std::io::stderr().lock()),
    };
    if let Err(error) = written {
        eprintln!("error: cannot write the coverage: {error}");
    }
}
