//! `mandate check`: one request decided from the command line, printed as
//! JSON (and explained with `--explain`), for trying a policy by hand.

use clap::Args;
use mandate::app;
use mandate::engine::{Decision, DecisionRequest, EntityRef};
use mandate::policy::PolicySnapshot;
use mandate::tools::suite::split_uid;

use super::{ExitCode, OrExit, Outcome, PackArgs, context_arg, error, runtime, say};

/// What `check` decides: the pack, the request, and whether to explain.
#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    config: PackArgs,
    /// The principal: `user:alice`, or Cedar's `Brokerage::User::"alice"`.
    #[arg(long)]
    principal: String,
    /// The action id, e.g. `view_account`.
    #[arg(long)]
    action: String,
    /// The resource: `account:acme-personal`, or a Cedar uid.
    #[arg(long)]
    resource: String,
    /// The context, as JSON.
    #[arg(long, value_name = "JSON")]
    context: Option<String>,
    /// Also show, for each policy of the action, whether its scope matched
    /// and its condition held, and which part of the condition failed.
    #[arg(long)]
    explain: bool,
}

/// Decides the request: exit 0 on allow, 1 on deny, 2 on a request that
/// cannot be decided.
pub fn run(args: &CheckArgs) -> Outcome {
    let config = args.config.load(ExitCode::Usage)?;
    let (Some(principal), Some(resource)) = (split_uid(&args.principal), split_uid(&args.resource))
    else {
        return Err(error(
            ExitCode::Usage,
            "`--principal` and `--resource` take `type:id` or `Type::\"id\"`",
        ));
    };
    let context = context_arg(args.context.as_deref())?;
    let engine = app::engine(&config).or_exit(ExitCode::Usage)?;
    let snapshot = engine.policies().current();
    if let Some(message) = unknown_name(&snapshot, principal.0, resource.0, &args.action) {
        return Err(error(ExitCode::Usage, message));
    }
    let rt = runtime()?;
    let request = DecisionRequest {
        principal: EntityRef {
            type_name: principal.0,
            id: principal.1,
            properties: None,
        },
        action: &args.action,
        resource: EntityRef {
            type_name: resource.0,
            id: resource.1,
            properties: None,
        },
        context: context.as_ref(),
        entities: mandate::engine::RequestEntities::None,
        request_id: None,
    };
    let decision = match rt.block_on(engine.decide(&request)) {
        Ok(decision) => decision,
        Err(error) => {
            eprintln!("error: {}: {}", error.code, error.message);
            print_context_shape(&snapshot, &args.action);
            return Err(ExitCode::Usage);
        }
    };
    let mut out = decision_json(&decision);
    if args.explain {
        let trace = serde_json::json!(rt.block_on(engine.trace(&request)));
        if let Some(fields) = out.as_object_mut() {
            fields.insert("explanation".to_owned(), trace);
        }
    }
    say(format_args!("{out:#}"));
    Ok(if decision.allowed() {
        ExitCode::Success
    } else {
        ExitCode::No
    })
}

/// A name the schema does not declare is a mistake on the command line,
/// not a deny: what to say of the first one, with the name that was
/// probably meant.
fn unknown_name(
    snapshot: &PolicySnapshot,
    principal: &str,
    resource: &str,
    action: &str,
) -> Option<String> {
    [("--principal", principal), ("--resource", resource)]
        .into_iter()
        .find(|(_, ty)| snapshot.entity_type(ty).is_none())
        .map(|(flag, ty)| format!("`{flag}`: {}", snapshot.unknown_type("entity type", ty)))
        .or_else(|| {
            snapshot
                .action(action)
                .is_none()
                .then(|| format!("`--action`: {}", snapshot.unknown_action(action)))
        })
}

/// After a request that could not be decided: the context `action` takes,
/// the likeliest thing to fix.
fn print_context_shape(snapshot: &PolicySnapshot, action: &str) {
    let shape = snapshot
        .action(action)
        .and_then(|action| snapshot.plan(action))
        .and_then(|plan| plan.shape());
    if let Some(shape) = shape {
        eprintln!(
            "`{action}` takes this context (`--context`):\n{}",
            shape.describe_context()
        );
    }
}

/// The decision as `check` prints it: the decision, its reasons and
/// errors, the policies' version and the summary.
fn decision_json(decision: &Decision) -> serde_json::Value {
    let errors: Vec<serde_json::Value> = decision
        .errors()
        .iter()
        .map(
            |e| serde_json::json!({"code": e.code(), "message": e.message(), "policy": e.policy()}),
        )
        .collect();
    serde_json::json!({
        "decision": if decision.allowed() { "Allow" } else { "Deny" },
        "reasons": decision.reasons().collect::<Vec<_>>(),
        "errors": errors,
        "policy_version": decision.policy_version(),
        "summary": decision.summary().to_string(),
    })
}
