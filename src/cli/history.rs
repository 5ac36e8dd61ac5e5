//! `mandate history`: a resource's action history read from JetStream and
//! printed as JSON lines, for asking who did what to it, and when.

use std::path::PathBuf;

use clap::Args;
use mandate::config;
use mandate::policy::TypeNames;
use mandate::tools::suite::split_uid;

use super::{ExitCode, NatsAuthArgs, Outcome, error, runtime, say, schema_types};

/// Where the history is (its server, stream and subjects), the resource
/// asked about, and the filters.
#[derive(Args)]
pub struct HistoryArgs {
    #[arg(long, value_name = "URL", env = "MANDATE_HISTORY_URL", help = config::help("history.url"))]
    url: String,
    #[arg(long, value_name = "NAME", env = "MANDATE_HISTORY_STREAM", default_value = "MANDATE_HISTORY", help = config::help("history.stream"))]
    stream: String,
    #[arg(long, value_name = "PREFIX", env = "MANDATE_HISTORY_SUBJECT_PREFIX", default_value = "mandate.history", help = config::help("history.subject_prefix"))]
    subject_prefix: String,
    #[command(flatten)]
    auth: NatsAuthArgs,
    /// The resource: `type:id` or Cedar's `Type::"id"`.
    #[arg(long, value_name = "UID")]
    resource: String,
    /// Only lines decided this long ago or later (`1h`, `7d`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// Only this principal's lines: `type:id` or `Type::"id"`.
    #[arg(long, value_name = "UID")]
    principal: Option<String>,
    /// Only this action's lines.
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// The schema naming the types (default: the configuration's, else the
    /// shipped one).
    #[arg(long, value_name = "PATH")]
    schema: Option<PathBuf>,
    /// The configuration whose schema names the types.
    #[arg(long, value_name = "FILE", conflicts_with = "schema")]
    config: Option<PathBuf>,
}

/// A uid as the lines write it, with the parts it was written from: the
/// type as Cedar prints it, the id, and Cedar's canonical `Type::"id"`.
struct Canonical {
    type_name: String,
    id: String,
    uid: String,
}

/// Prints the resource's lines (those of `--principal` and `--action`
/// alone, when given), then a count on stderr: exit 0, 2 on a uid the
/// schema does not declare, 3 when the history cannot be read.
pub fn run(args: &HistoryArgs) -> Outcome {
    let types = schema_types(args.schema.as_deref(), args.config.as_deref())?;
    let resource = canonical(&types, &args.resource)
        .map_err(|error| self::error(ExitCode::Usage, format_args!("--resource {error}")))?;
    let principal = args
        .principal
        .as_deref()
        .map(|written| canonical(&types, written))
        .transpose()
        .map_err(|error| self::error(ExitCode::Usage, format_args!("--principal {error}")))?
        .map(|principal| principal.uid);
    let subject = mandate::telemetry::history::subject(
        &args.subject_prefix,
        &resource.type_name,
        &resource.id,
    );
    let nats = args.auth.settings(args.url.clone(), String::new());
    let since = args.since.map(|ago| std::time::SystemTime::now() - ago);
    let rt = runtime()?;
    let mut printed = 0u64;
    let wanted = |line: &serde_json::Value| {
        principal
            .as_deref()
            .is_none_or(|p| line.get("principal").and_then(|v| v.as_str()) == Some(p))
            && args
                .action
                .as_deref()
                .is_none_or(|a| line.get("action").and_then(|v| v.as_str()) == Some(a))
    };
    let read = rt
        .block_on(mandate::bus::history::read(
            &nats,
            &args.stream,
            &subject,
            since,
            |payload| {
                let Ok(line) = serde_json::from_slice::<serde_json::Value>(payload) else {
                    return;
                };
                if wanted(&line) {
                    printed += 1;
                    say(format_args!("{}", String::from_utf8_lossy(payload)));
                }
            },
        ))
        .map_err(|error| self::error(ExitCode::Inconclusive, error))?;
    eprintln!(
        "{printed} of {read} lines of {} (subject {subject})",
        resource.uid
    );
    Ok(ExitCode::Success)
}

/// The uid `written` (`type:id` or `Type::"id"`) as the lines write it;
/// the message of a usage error when it is not a uid of a declared type.
fn canonical(types: &TypeNames, written: &str) -> Result<Canonical, String> {
    let (type_name, id) = split_uid(written)
        .ok_or_else(|| format!("`{written}`: write `type:id` or `Type::\"id\"`"))?;
    let (ty, printed) = types
        .get(type_name)
        .ok_or_else(|| format!("`{written}`: {}", types.unknown(type_name)))?;
    let uid =
        cedar_policy::EntityUid::from_type_name_and_id(ty.clone(), cedar_policy::EntityId::new(id));
    Ok(Canonical {
        type_name: printed.to_owned(),
        id: id.to_owned(),
        uid: uid.to_string(),
    })
}
