//! `mandate verify`: the pack's invariants proved for every well-typed
//! request and entity store (Cedar's symbolic compiler and cvc5), or, with
//! `--against`, what a candidate pack grants or removes; every
//! counterexample printed as a `mandate check` command and a test suite.

use std::path::{Path, PathBuf};

use clap::Args;
use mandate::app;
use mandate::config::Config;
use mandate::policy::PolicySnapshot;
use mandate::tools::verify::{Change, Comparison, Counterexample, Outcome, Pack, Report};

use super::{ExitCode, OrExit, PackArgs, error, runtime, say};

/// The pack, its invariants (or the pack to compare it with), the
/// solver's time limit, and where and how counterexamples are written.
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    config: PackArgs,
    /// The invariants file (default: `invariants.toml` in the policy directory).
    #[arg(long, value_name = "FILE")]
    invariants: Option<PathBuf>,
    /// The solver's time limit per query; past it a check is `unknown`.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Compare the pack with the one in DIR (same schema) instead: per
    /// request type, equivalent, fewer allows, or more allows with a
    /// request it grants.
    #[arg(long, value_name = "DIR")]
    against: Option<PathBuf>,
    /// Where counterexamples' entities are written.
    #[arg(long, value_name = "DIR", default_value = "target/verify")]
    out: PathBuf,
    /// `text` for a person, `json` (one object per check) for tools.
    #[arg(long, value_enum, default_value = "text")]
    format: VerifyFormat,
}

/// `--format`, as the command line spells it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum VerifyFormat {
    Text,
    Json,
}

/// Proves the invariants (or compares with `--against`): exit 0 all
/// proved, 1 one violated, 2 usage or no solver, 3 one unknown.
pub fn run(args: &VerifyArgs) -> super::Outcome {
    let config = args.config.load(ExitCode::Usage)?;
    let snapshot = mandate::policy::load(&app::policy_sources(&config)).or_exit(ExitCode::Usage)?;
    if let Some(against) = &args.against {
        return verify_against(args, &config, &snapshot, against);
    }
    let file = args
        .invariants
        .clone()
        .unwrap_or_else(|| config.policy.dir.join("invariants.toml"));
    let usage = |error| self::error(ExitCode::Usage, error);
    let invariants = mandate::tools::verify::Invariants::read(&file).map_err(usage)?;
    let rt = runtime()?;
    let reports = rt
        .block_on(mandate::tools::verify::verify(
            snapshot.policies(),
            snapshot.schema(),
            &invariants,
            args.timeout,
        ))
        .map_err(usage)?;
    let pack = Pack {
        policies: &config.policy.dir,
        schema: &config.policy.schema,
    };
    for report in &reports {
        print_report(args, report, pack);
    }
    let has = |outcome: Outcome| reports.iter().any(|r| r.outcome == outcome);
    Ok(verdict(has(Outcome::Violated), has(Outcome::Unknown)))
}

/// The exit code of a run where some check `failed` (a violation, a
/// request type gaining allows) or some was `unknown`: a failure outranks
/// an unknown.
fn verdict(failed: bool, unknown: bool) -> ExitCode {
    if failed {
        ExitCode::No
    } else if unknown {
        ExitCode::Inconclusive
    } else {
        ExitCode::Success
    }
}

/// One invariant's report, in `--format`; in text, a counterexample's
/// command and its suite.
fn print_report(args: &VerifyArgs, report: &Report, pack: Pack<'_>) {
    let name = report.id.replace([':', '/'], "-");
    let outcome = match report.outcome {
        Outcome::Proved => "proved  ",
        Outcome::Violated => "VIOLATED",
        Outcome::Unknown => "UNKNOWN ",
    };
    let headline = format!(
        "{outcome} {} ({}): {} [{} request types, {} ms]",
        report.id, report.rule, report.says, report.request_types, report.millis
    );
    let counterexample = report.counterexample.as_ref();
    print_check(
        args,
        &name,
        report,
        &headline,
        report.reason.as_deref(),
        counterexample,
        |example, path| {
            print_example("counterexample", example, path, pack);
            let suite = mandate::tools::verify::test_case(
                &format!("counterexample to {}", report.id),
                &report.says,
                &report.rule,
                example,
                "deny",
            );
            print_suite(&args.out, &name, &suite, pack);
        },
    );
}

/// One check in `--format`, its counterexample's entities written under
/// `--out` either way: in JSON the check itself; in text its `headline`,
/// the solver's `reason`, then what `example` prints of the counterexample.
fn print_check(
    args: &VerifyArgs,
    name: &str,
    check: &impl serde::Serialize,
    headline: &str,
    reason: Option<&str>,
    counterexample: Option<&Counterexample>,
    example: impl FnOnce(&Counterexample, &Path),
) {
    let written = counterexample.and_then(|example| write_entities(&args.out, name, example));
    match args.format {
        VerifyFormat::Json => say(format_args!(
            "{}",
            serde_json::to_string(check).unwrap_or_default()
        )),
        VerifyFormat::Text => {
            say(format_args!("{headline}"));
            if let Some(reason) = reason {
                say(format_args!("  {reason}"));
            }
            if let Some((counterexample, path)) = &written {
                example(counterexample, path);
            }
        }
    }
}

/// `mandate verify --against DIR`: the pack against the one in DIR.
fn verify_against(
    args: &VerifyArgs,
    config: &Config,
    candidate: &PolicySnapshot,
    against: &Path,
) -> super::Outcome {
    let mut sources = app::policy_sources(config);
    sources.policy_dir = against.to_owned();
    let baseline = mandate::policy::load(&sources).or_exit(ExitCode::Usage)?;
    let rt = runtime()?;
    let comparisons = rt
        .block_on(mandate::tools::verify::compare(
            candidate.policies(),
            baseline.policies(),
            candidate.schema(),
            args.timeout,
        ))
        .map_err(|error| self::error(ExitCode::Usage, error))?;
    let packs = Packs {
        candidate: Pack {
            policies: &config.policy.dir,
            schema: &config.policy.schema,
        },
        baseline: Pack {
            policies: against,
            schema: &config.policy.schema,
        },
    };
    for (index, comparison) in comparisons.iter().enumerate() {
        print_comparison(args, index, comparison, packs);
    }
    let has = |change: Change| comparisons.iter().any(|c| c.change == change);
    if matches!(args.format, VerifyFormat::Text) {
        let summary = if has(Change::MoreAllows) {
            "the candidate grants what the baseline denies (MORE ALLOWS above)"
        } else if has(Change::FewerAllows) {
            "the candidate only removes permissions"
        } else if has(Change::Unknown) {
            "the solver could not settle every request type"
        } else {
            "the candidate decides every request as the baseline does"
        };
        say(format_args!("{summary}"));
    }
    Ok(verdict(has(Change::MoreAllows), has(Change::Unknown)))
}

/// The two packs `--against` compares, for the commands that reproduce
/// each one's answer.
#[derive(Clone, Copy)]
struct Packs<'a> {
    candidate: Pack<'a>,
    baseline: Pack<'a>,
}

/// One request type's comparison, in `--format`; in text, a
/// counterexample's commands for both packs and the candidate's suite.
fn print_comparison(args: &VerifyArgs, index: usize, comparison: &Comparison, packs: Packs<'_>) {
    let name = format!("against-{index}");
    let change = match comparison.change {
        Change::Equivalent => "equivalent  ",
        Change::FewerAllows => "fewer allows",
        Change::MoreAllows => "MORE ALLOWS ",
        Change::Unknown => "UNKNOWN     ",
    };
    let headline = format!(
        "{change} {} [{} ms]",
        comparison.request_type, comparison.millis
    );
    let counterexample = comparison.counterexample.as_ref();
    print_check(
        args,
        &name,
        comparison,
        &headline,
        comparison.reason.as_deref(),
        counterexample,
        |example, path| {
            let (what, candidate_says) = if comparison.change == Change::MoreAllows {
                ("e.g. granted; the candidate allows", "allow")
            } else {
                ("e.g. taken away; the candidate denies", "deny")
            };
            print_example(what, example, path, packs.candidate);
            say(format_args!("  the baseline's answer:"));
            say(format_args!(
                "    {}",
                mandate::tools::verify::check_command(example, path, packs.baseline)
            ));
            let suite = mandate::tools::verify::test_case(
                &format!("changed by the candidate: {}", comparison.request_type),
                &format!("the candidate's answer ({candidate_says})"),
                "changed by the candidate",
                example,
                candidate_says,
            );
            print_suite(&args.out, &name, &suite, packs.candidate);
        },
    );
}

/// Writes a counterexample's entities to `OUT/NAME.entities.json`, for the
/// `mandate check` command that reproduces it.
fn write_entities<'e>(
    out: &Path,
    name: &str,
    example: &'e Counterexample,
) -> Option<(&'e Counterexample, PathBuf)> {
    let _ = std::fs::create_dir_all(out);
    let path = out.join(format!("{name}.entities.json"));
    std::fs::write(&path, format!("{:#}", example.entities))
        .ok()
        .map(|()| (example, path))
}

/// A counterexample: whether Cedar confirms it, and the command that
/// reproduces `pack`'s answer when pasted.
fn print_example(what: &str, example: &Counterexample, path: &Path, pack: Pack<'_>) {
    let confirmed = if example.confirmed {
        "Cedar's authorizer confirms it"
    } else {
        "NOT confirmed by Cedar's authorizer"
    };
    say(format_args!("  {what} ({confirmed}):"));
    say(format_args!(
        "    {}",
        mandate::tools::verify::check_command(example, path, pack)
    ));
}

/// A counterexample as a self-contained suite: printed, written beside its
/// entities, and the command that runs it.
fn print_suite(out: &Path, name: &str, suite: &str, pack: Pack<'_>) {
    let file = out.join(format!("{name}.test.yaml"));
    say(format_args!("  as a test case (entities inline):"));
    for line in suite.lines() {
        say(format_args!("    {line}"));
    }
    if std::fs::write(&file, suite).is_ok() {
        say(format_args!(
            "  written to {}; run it with:\n    {}",
            file.display(),
            mandate::tools::verify::test_command(&file, pack)
        ));
    }
}
