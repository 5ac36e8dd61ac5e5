//! `mandate publish`: an entity change event sent on the bus by hand, so
//! every replica forgets the entities it names (or everything) at once.

use std::path::PathBuf;

use clap::Args;
use mandate::bus::{Changed, EventUid};
use mandate::policy::TypeNames;
use mandate::tools::suite::split_uid;

use super::{BusArgs, ExitCode, Outcome, error, runtime, say, schema_types};

/// What `publish` sends, and where: the bus and the changed entities.
#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// The changed entities: `type:id` or Cedar's `Type::"id"`.
    #[arg(
        value_name = "UID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    uids: Vec<String>,
    /// Everything changed: every replica forgets every cached entity.
    #[arg(long)]
    all: bool,
    /// The event's revision: one more than the last one published on the
    /// subject (a jump tells replicas an event was missed). Default: none.
    #[arg(long, value_name = "N")]
    revision: Option<u64>,
    /// Check each uid's type against this schema first (exit 2 on a type
    /// it does not declare): replicas drop what their schema lacks.
    #[arg(long, value_name = "PATH")]
    schema: Option<PathBuf>,
    /// Check each uid's type against this configuration's schema first.
    #[arg(long, value_name = "FILE", conflicts_with = "schema")]
    config: Option<PathBuf>,
}

impl PublishArgs {
    /// The schema's type names to check uids against, when asked for.
    fn type_names(&self) -> Result<Option<TypeNames>, ExitCode> {
        if self.schema.is_none() && self.config.is_none() {
            return Ok(None);
        }
        schema_types(self.schema.as_deref(), self.config.as_deref()).map(Some)
    }
}

/// Publishes the event and waits for the server to have it: exit 0, or 2
/// on a uid no replica would take or a bus that cannot be reached.
pub fn run(args: &PublishArgs) -> Outcome {
    let Some(settings) = args.bus.settings() else {
        return Err(error(
            ExitCode::Usage,
            "`--nats URL` (or `MANDATE_BUS_URL`) names the bus to publish on",
        ));
    };
    let types = args.type_names()?;
    let changed = if args.all {
        Changed::All
    } else {
        Changed::Uids(uids(&args.uids, types.as_ref())?)
    };
    let event = mandate::bus::ChangeEvent {
        changed,
        revision: args.revision,
    };
    let rt = runtime()?;
    rt.block_on(mandate::bus::publish(&settings, &event))
        .map_err(|error| self::error(ExitCode::Usage, error))?;
    say(format_args!(
        "published on {}: {}",
        settings.subject,
        String::from_utf8_lossy(&event.encode())
    ));
    Ok(ExitCode::Success)
}

/// The uids `written` on the command line, their types checked against
/// `types` when given; every unknown type is named before the publish is
/// refused.
fn uids(written: &[String], types: Option<&TypeNames>) -> Result<Vec<EventUid>, ExitCode> {
    if types.is_none() {
        eprintln!(
            "warning: types are unchecked: a replica drops a uid whose type its schema does not declare (give `--schema` or `--config` to check them here)"
        );
    }
    let mut uids = Vec::with_capacity(written.len());
    let mut unknown = false;
    for written in written {
        let Some((type_name, id)) = split_uid(written) else {
            return Err(error(
                ExitCode::Usage,
                format_args!("`{written}`: write `type:id` or `Type::\"id\"`"),
            ));
        };
        // Checked, a type is published as Cedar prints it.
        let type_name = match types {
            None => type_name,
            Some(types) => match types.get(type_name) {
                Some((_, printed)) => printed,
                None => {
                    eprintln!("error: `{written}`: {}", types.unknown(type_name));
                    unknown = true;
                    continue;
                }
            },
        };
        uids.push(EventUid {
            type_name: type_name.to_owned(),
            id: id.to_owned(),
        });
    }
    if unknown {
        return Err(error(
            ExitCode::Usage,
            "nothing published: every replica would drop those uids",
        ));
    }
    Ok(uids)
}
