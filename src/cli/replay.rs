//! `mandate replay`: a recorded decision log decided again by the current
//! pack and a candidate, for seeing what a policy change would have decided
//! differently, and a gate that fails on it.

use std::path::{Path, PathBuf};

use clap::Args;
use mandate::config;
use mandate::tools::replay::{EntitySource, FailOn, Replayer, Summary};

use super::{ExitCode, OrExit, Outcome, PackArgs, error, runtime};

/// The baseline pack (with its store, for `--entities live`), the
/// candidate, the logs, and what fails the gate.
#[derive(Args)]
pub struct ReplayArgs {
    /// The configuration file: the baseline pack, the schema and, for
    /// `--entities live`, the store.
    #[arg(long, value_name = "FILE", env = "MANDATE_CONFIG")]
    config: Option<PathBuf>,
    /// The baseline pack (default: the configured one).
    #[arg(long, value_name = "DIR")]
    policies: Option<PathBuf>,
    #[arg(long, value_name = "PATH", help = config::help("policy.schema"))]
    schema: Option<PathBuf>,
    /// For `--entities live`: the file store's entities file.
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    entities_file: Option<PathBuf>,
    /// For `--entities live`: the HTTP store.
    #[arg(long, value_name = "URL")]
    upstream: Option<String>,
    /// The candidate pack's directory (over the same schema).
    #[arg(long, value_name = "DIR")]
    candidate: PathBuf,
    /// `logged`: the entities each line captured (`log.capture_entities`);
    /// `live`: the configured store's, as they are now.
    #[arg(long, value_enum, default_value = "logged")]
    entities: ReplayEntities,
    /// What makes the exit code 1, one or more (comma-separated):
    /// `escalation` (a deny becoming an allow), `any` change,
    /// `unreplayable` (a line that could not be replayed), or `none`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "escalation")]
    fail_on: Vec<ReplayFailOn>,
    /// Decision log files, read in order (`-`: standard input).
    #[arg(required = true, value_name = "LOG")]
    logs: Vec<PathBuf>,
}

/// `--entities`, as the command line spells it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayEntities {
    Logged,
    Live,
}

/// `--fail-on`, as the command line spells it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ReplayFailOn {
    Escalation,
    Any,
    Unreplayable,
    None,
}

impl ReplayArgs {
    /// The baseline's flags, as the pack's: `--entities-file` is the
    /// store's `--entities` (`--entities` here says which entities replay).
    fn pack(&self) -> PackArgs {
        PackArgs {
            config: self.config.clone(),
            policies: self.policies.clone(),
            schema: self.schema.clone(),
            entities: self.entities_file.clone(),
            upstream: self.upstream.clone(),
        }
    }

    /// What `--fail-on` fails on; `none` with anything else is a usage error.
    fn fails_on(&self) -> Result<Vec<FailOn>, ExitCode> {
        let fail_on: Vec<FailOn> = self
            .fail_on
            .iter()
            .map(|fail_on| match fail_on {
                ReplayFailOn::Escalation => FailOn::Escalation,
                ReplayFailOn::Any => FailOn::Any,
                ReplayFailOn::Unreplayable => FailOn::Unreplayable,
                ReplayFailOn::None => FailOn::None,
            })
            .collect();
        if fail_on.contains(&FailOn::None) && !report_only(&fail_on) {
            return Err(error(
                ExitCode::Usage,
                "`--fail-on none` reports only: it takes no other value",
            ));
        }
        Ok(fail_on)
    }
}

/// Whether the replay only reports (`--fail-on none`), judging nothing.
fn report_only(fail_on: &[FailOn]) -> bool {
    fail_on.iter().all(|f| *f == FailOn::None)
}

/// The logs decided again by the baseline and the candidate; changed
/// decisions and the summary printed: exit 0, 1 on a change `--fail-on`
/// fails on, 2 on a pack or log that cannot be used, 3 when nothing was
/// replayed.
pub fn run(args: &ReplayArgs) -> Outcome {
    let config = args.pack().load(ExitCode::Usage)?;
    let source = match args.entities {
        ReplayEntities::Logged => EntitySource::Logged,
        ReplayEntities::Live => EntitySource::Live,
    };
    let fail_on = args.fails_on()?;
    let rt = runtime()?;
    let _guard = rt.enter();
    let replayer = Replayer::new(&config, &args.candidate, source).or_exit(ExitCode::Usage)?;
    let mut summary = Summary::default();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for log in &args.logs {
        let mut input = open(log)?;
        if let Err(error) = rt.block_on(replayer.replay(&mut input, &mut out, &mut summary)) {
            return Err(self::error(
                ExitCode::Usage,
                format_args!("`{}`: {error}", log.display()),
            ));
        }
    }
    let summary_line = serde_json::json!({ "summary": &summary });
    {
        use std::io::Write as _;
        let _ = writeln!(out, "{summary_line}");
        let _ = out.flush();
    }
    eprintln!("{}", describe_replay(&summary));
    Ok(verdict(&summary, &fail_on))
}

/// A log to read: a file, or standard input for `-`.
fn open(log: &Path) -> Result<Box<dyn std::io::BufRead>, ExitCode> {
    if log.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin().lock()));
    }
    match std::fs::File::open(log) {
        Ok(file) => Ok(Box::new(std::io::BufReader::new(file))),
        Err(error) => Err(self::error(
            ExitCode::Usage,
            format_args!("cannot read `{}`: {error}", log.display()),
        )),
    }
}

/// The gate's exit code, with why it failed or judged nothing.
fn verdict(summary: &Summary, fail_on: &[FailOn]) -> ExitCode {
    if summary.fails(fail_on) {
        if fail_on.contains(&FailOn::Unreplayable) && !summary.unreplayable.is_empty() {
            eprintln!("{}", unreplayable_fails(summary));
        }
        ExitCode::No
    } else if summary.replayed == 0 && !report_only(fail_on) {
        // A gate that judged nothing must not pass: it would let through
        // any candidate, the one that deletes F1 included.
        eprintln!("{}", nothing_to_judge(summary));
        ExitCode::Inconclusive
    } else {
        ExitCode::Success
    }
}

/// Why `--fail-on unreplayable` failed, and how to make the lines replay.
fn unreplayable_fails(summary: &Summary) -> String {
    let mut text = String::from(
        "error: lines that could not be replayed fail this gate (`--fail-on unreplayable`):",
    );
    for (cause, count) in &summary.unreplayable {
        text.push_str(&format!("\n  {cause}: {count}"));
    }
    text.push_str(&how_to_replay(summary));
    text
}

/// Why a replay judged nothing, and how to make it judge.
fn nothing_to_judge(summary: &Summary) -> String {
    let mut text = String::from(
        "error: nothing to judge: no decision line was replayed, so this gate cannot pass",
    );
    text.push_str(&how_to_replay(summary));
    if summary.records == 0 {
        text.push_str("\n  no decision line was read: is this a decision log?");
    }
    text.push_str("\n  (`--fail-on none` reports without judging)");
    text
}

/// How to make the lines that could not be replayed replay, one line per
/// cause that has a remedy: lines without their entities, masked lines (a
/// masked context value is gone; masked entity attributes are read from
/// the store instead).
fn how_to_replay(summary: &Summary) -> String {
    let mut text = String::new();
    if summary.unreplayable.contains_key("no_entities") {
        text.push_str(
            "\n  lines without their entities: log with `log.capture_entities = true`, or replay over the store's entities now with `--entities live`",
        );
    }
    if summary.unreplayable.contains_key("masked") {
        text.push_str(
            "\n  masked lines (`log.mask`): a masked context value cannot be replayed (log without masking what decisions read); masked entity attributes replay over the store with `--entities live`",
        );
    }
    text
}

/// The summary for a person.
fn describe_replay(summary: &Summary) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "{} decisions read, {} replayed: {} unchanged, {} allow→deny, {} deny→allow (escalations)",
        summary.records,
        summary.replayed,
        summary.unchanged,
        summary.changes.allow_to_deny,
        summary.changes.deny_to_allow
    );
    if summary.skipped > 0 {
        let _ = write!(text, "; {} other lines skipped", summary.skipped);
    }
    for (cause, count) in &summary.unreplayable {
        let _ = write!(text, "\n  unreplayable, {cause}: {count}");
    }
    for (action, changes) in &summary.by_action {
        let _ = write!(
            text,
            "\n  {action}: {} allow→deny, {} deny→allow",
            changes.allow_to_deny, changes.deny_to_allow
        );
    }
    for (policy, count) in &summary.by_policy {
        let _ = write!(text, "\n  decided by {policy}: {count}");
    }
    text
}
