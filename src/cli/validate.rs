//! `mandate validate`: whether the configuration, schema, policies,
//! entities and gateway routes load, with Cedar's diagnostics when not, so
//! a pack can be checked before it is served.

use mandate::app;

use super::{ExitCode, OrExit, Outcome, PackArgs, say};

/// Loads everything `serve` would and says what was found valid.
pub fn run(args: &PackArgs) -> Outcome {
    // A configuration that does not load is invalid input, like a bad policy.
    let config = args.load(ExitCode::No)?;
    let engine = app::engine(&config)
        .and_then(|engine| app::routes(&config, &engine).map(|_| engine))
        .or_exit(ExitCode::No)?;
    let snapshot = engine.policies().current();
    say(format_args!(
        "ok: {} policies valid against the schema (version {}); entities valid",
        snapshot.policy_count(),
        snapshot.version()
    ));
    Ok(ExitCode::Success)
}
