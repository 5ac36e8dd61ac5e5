//! `mandate search`: AuthZEN search from the command line (who may, on
//! what, which actions), answered as the HTTP API answers it.

use clap::Args;
use mandate::app;
use mandate::engine::{SearchQuery, Searched};
use mandate::tools::suite::split_uid;

use super::{ExitCode, OrExit, Outcome, PackArgs, context_arg, error, runtime, say};

/// What `search` asks: what is searched, over which pack, and the query.
#[derive(Args)]
pub struct SearchArgs {
    /// What to find: `subject`, `resource` or `action`.
    #[arg(value_enum)]
    searched: SearchedArg,
    #[command(flatten)]
    config: PackArgs,
    /// The principal (`user:carol`), unless subjects are searched.
    #[arg(long)]
    principal: Option<String>,
    /// The action id, unless actions are searched.
    #[arg(long)]
    action: Option<String>,
    /// The resource (`account:alice-personal`), unless resources are searched.
    #[arg(long)]
    resource: Option<String>,
    /// The type searched, for subject and resource search (`user`, `account`).
    #[arg(long = "type", value_name = "TYPE")]
    searched_type: Option<String>,
    /// The context, as JSON.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
}

/// The search's first argument, as the command line spells it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SearchedArg {
    Subject,
    Resource,
    Action,
}

/// An entity as the query names it: its type and id (no id for the type
/// searched).
type Named = (String, String);

/// Searches and prints the results as the HTTP API's JSON: exit 0 (the
/// results may be empty), 2 on a query that cannot be asked.
pub fn run(args: &SearchArgs) -> Outcome {
    let usage = |message: &str| error(ExitCode::Usage, message);
    let config = args.config.load(ExitCode::Usage)?;
    let searched = match args.searched {
        SearchedArg::Subject => Searched::Subject,
        SearchedArg::Resource => Searched::Resource,
        SearchedArg::Action => Searched::Action,
    };
    let (subject, resource) = parts(args, searched).map_err(|message| usage(&message))?;
    let action = match (searched, &args.action) {
        (Searched::Action, None) => String::new(),
        (Searched::Action, Some(_)) => return Err(usage("an action search takes no `--action`")),
        (_, Some(action)) => action.clone(),
        (_, None) => return Err(usage("`--action` is required in this search")),
    };
    let context = context_arg(args.context.as_deref())?;
    let engine = app::engine(&config).or_exit(ExitCode::Usage)?;
    let rt = runtime()?;
    let query = SearchQuery {
        subject: (&subject.0, &subject.1),
        action: &action,
        resource: (&resource.0, &resource.1),
        context: context.as_ref(),
    };
    let found = rt
        .block_on(engine.search(&query, searched, config.search.max_candidates))
        .map_err(|error| usage(&error.to_string()))?;
    let results = mandate::api::search_results(searched, &subject.0, &resource.0, &found.ids);
    let mut answer = serde_json::Map::new();
    answer.insert("results".to_owned(), serde_json::Value::from(results));
    if let Some(context) = mandate::api::skipped_context(&found) {
        answer.insert("context".to_owned(), context);
    }
    let answer = serde_json::Value::Object(answer);
    say(format_args!("{answer:#}"));
    for skipped in &found.skipped {
        eprintln!(
            "note: `{}` not decided: {} (give `--context` with what it needs)",
            skipped.action, skipped.reason
        );
    }
    Ok(ExitCode::Success)
}

/// The query's subject and resource: the one searched by its type alone,
/// the other by its uid; the message of a usage error when one is missing.
fn parts(args: &SearchArgs, searched: Searched) -> Result<(Named, Named), String> {
    let uid = |flag: &str, value: &Option<String>| -> Result<Named, String> {
        let written = value
            .as_deref()
            .ok_or(format!("`--{flag}` is required in this search"))?;
        split_uid(written)
            .map(|(t, i)| (t.to_owned(), i.to_owned()))
            .ok_or(format!("`--{flag}` takes `type:id` or `Type::\"id\"`"))
    };
    let of_type = || {
        args.searched_type
            .clone()
            .map(|t| (t, String::new()))
            .ok_or_else(|| "`--type` names the type searched".to_owned())
    };
    match searched {
        Searched::Subject => of_type().and_then(|s| Ok((s, uid("resource", &args.resource)?))),
        Searched::Resource => uid("principal", &args.principal).and_then(|s| Ok((s, of_type()?))),
        Searched::Action => uid("principal", &args.principal)
            .and_then(|s| Ok((s, uid("resource", &args.resource)?))),
    }
}
