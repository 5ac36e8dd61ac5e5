//! `mandate settings`: every setting, its key, variable, flag, default and
//! meaning, for a person choosing what to set (docs/configuration.md's table).

use super::{ExitCode, Outcome, say};

/// Prints the settings' reference table.
pub fn run() -> Outcome {
    say(format_args!(
        "{}",
        mandate::config::reference_table().trim_end()
    ));
    Ok(ExitCode::Success)
}
