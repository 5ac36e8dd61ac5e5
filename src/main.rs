//! The `mandate` command: its command line, each subcommand's help, and the
//! dispatch to `cli`, where each subcommand is a module of its own (`serve`,
//! `check`, `validate`, `test`, `verify`, `replay`, `serve-store`,
//! `publish`, `history`, `search`, `settings`).
//!
//! Errors are printed and exit codes chosen in `cli` alone, one table for
//! every subcommand: `cli::ExitCode` (docs/cli.md's "Exit codes").

mod cli;

/// The allocator: mimalloc's small-object pages serve a decision's
/// short-lived allocations in about a third of glibc's instructions
/// (BENCHMARKS.md, issue 35: 1,700 fewer instructions a decision). Built
/// without transparent huge pages (`no_thp`): with them an idle server's
/// memory grew from 25 to 36 MiB.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

use cli::{
    PackArgs, check::CheckArgs, history::HistoryArgs, publish::PublishArgs, replay::ReplayArgs,
    search::SearchArgs, serve::ServeArgs, serve_store::StoreArgs, test::TestArgs,
    verify::VerifyArgs,
};

/// Mandate: a Cedar policy decision point for delegated account access.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    // The subcommand to run (a doc comment here would be help text).
    #[command(subcommand)]
    command: Command,
}

/// The subcommands: each variant's doc comment is its help, its
/// `after_help` the examples and exit codes.
#[derive(Subcommand)]
enum Command {
    /// Serve decisions over HTTP (AuthZEN 1.0 and the native Cedar API).
    #[command(after_help = "\
Examples:
  mandate serve                                   # the shipped pack and demo data on 127.0.0.1:8180
  mandate serve --config mandate.toml             # your settings (paths relative to the file)
  mandate serve --upstream https://store.internal --listen 0.0.0.0:8180

Exit codes: 0 stopped cleanly (SIGTERM, SIGINT), 2 usage, 64 could not start.")]
    Serve(ServeArgs),
    /// Decide one request from the command line: exit 0 allow, 1 deny, 2 error.
    #[command(after_help = "\
Examples:
  mandate check --principal user:carol --action place_order \\
      --resource account:alice-personal --context '{\"side\":\"buy\",\"instrument\":\"AAPL\"}'
  mandate check --explain --principal user:bob --action withdraw \\
      --resource account:alice-personal \\
      --context '{\"destination\":{\"type\":\"Brokerage::Destination\",\"id\":\"alice-bank\"},\"amount\":\"100.00\"}'

Exit codes: 0 allow, 1 deny, 2 usage (an unknown action or type, a context that does not fit).")]
    Check(CheckArgs),
    /// Validate the configuration, the schema, the policies, the entities
    /// and the gateway routes, with Cedar's diagnostics: exit 0 valid, 1 invalid.
    #[command(after_help = "\
Examples:
  mandate validate
  mandate validate --config mandate.toml
  mandate validate --policies ./policies --schema ./schema --entities ./entities.json

Exit codes: 0 valid, 1 invalid, 2 usage.")]
    Validate(PackArgs),
    /// Run policy test suites (YAML): exit 0 all pass, 1 a case failed, 2 a
    /// suite could not run.
    #[command(after_help = "\
Examples:
  mandate test                                    # every suite under tests/policies
  mandate test tests/policies/roles.yaml --filter S2
  mandate test --format junit > report.xml        # for CI test reports
  mandate test --coverage --min-coverage 100      # every policy decides some case

A case fails when it names an action, type or entity the schema or entities lack, or
when its decision errs, unless it lists the error under `errors:` (docs/testing-policies.md).

Exit codes: 0 every case passed, 1 a case failed (or none ran, or coverage is below
--min-coverage), 2 a suite could not run.")]
    Test(TestArgs),
    /// Prove the pack's invariants for every well-typed request and every
    /// entity store (Cedar's symbolic compiler and the cvc5 SMT solver).
    #[command(after_help = "\
Examples:
  mandate verify                                  # policies/invariants.toml over the pack
  mandate verify --invariants my-invariants.toml --policies ./candidate --schema ./schema
  mandate verify --format json
  mandate verify --policies ./candidate --schema ./schema --against ./policies   # what a change grants or removes

Each invariant prints `proved`, `violated` (with a counterexample: a `mandate check`
command and a `mandate test` suite reproducing it, re-decided by Cedar's authorizer)
or `unknown` (the solver's time limit). Needs cvc5 on PATH (or `CVC5`).

With `--against DIR`, each request type is `equivalent`, `fewer_allows` (the change only
removes permissions), `more_allows` (with a request it grants, confirmed by Cedar) or
`unknown`, also where a policy of either pack can error (Cedar skips it, Mandate denies,
so the solver's comparison would not be Mandate's). Each counterexample prints a
`mandate check` line giving the pack's answer when pasted, and a self-contained suite.

Exit codes: 0 all proved (with --against: nothing granted), 1 one violated (a request type
gains allows), 2 usage (or no solver), 3 one unknown.")]
    Verify(VerifyArgs),
    /// Decide a recorded decision log again with a candidate pack: what
    /// would this change have decided differently?
    #[command(after_help = "\
Examples:
  mandate replay --candidate ./candidate decisions.log               # the entities each line captured
  mandate replay --candidate ./candidate --entities live decisions-*.log   # the store's entities now
  zcat yesterday.log.gz | mandate replay --candidate ./candidate --fail-on any -
  mandate replay --candidate ./candidate --fail-on escalation,unreplayable decisions.log  # nothing unchecked

Each line is decided by the current pack (the baseline, which must still reproduce the
logged decision) and by the candidate. One JSON line per changed decision on stdout, then
`{\"summary\": ...}`: records, replayed, unreplayable by cause, allow_to_deny and deny_to_allow
(escalations), by action and by the candidate's deciding policy; the summary for a person on
stderr. Lines need `\"v\"` (written since this version); `--entities logged` needs
`log.capture_entities = true` when they were written.

Exit codes: 0 nothing to fail on, 1 a change `--fail-on` fails on, 2 usage (a pack that does
not load, a log that cannot be read), 3 nothing to judge (no line replayed; not with
`--fail-on none`).")]
    Replay(ReplayArgs),
    /// Serve a Cedar JSON entities file as an HTTP entity store (the
    /// upstream contract), for demos and benchmarks.
    #[command(after_help = "\
Examples:
  mandate serve-store --entities examples/demo/entities.json --listen 127.0.0.1:8190
  mandate serve --upstream http://127.0.0.1:8190
  mandate serve-store --nats nats://127.0.0.1:4222   # publishes what changes when the file does

Exit codes: 0 stopped cleanly, 2 the file, the address or the bus cannot be used.")]
    ServeStore(StoreArgs),
    /// Publish an entity change event: every replica subscribed to the
    /// subject forgets these entities (or everything, with `--all`).
    #[command(after_help = "\
Examples:
  mandate publish --nats nats://127.0.0.1:4222 'Brokerage::User::\"grace\"' account:alice-personal
  mandate publish --nats tls://bus.internal:4222 --credentials ops.creds --all
  mandate publish --nats nats://127.0.0.1:4222 --schema ./schema user:grace   # types checked first
  nats pub mandate.entities.changed '{\"uids\":[{\"type\":\"Brokerage::User\",\"id\":\"grace\"}]}'   # the same, with the NATS CLI

Exit codes: 0 published (the server has it), 2 usage (a type `--schema` does not declare)
or the bus cannot be reached.")]
    Publish(PublishArgs),
    /// Print a resource's action history (from JetStream) as JSON lines.
    #[command(after_help = "\
Examples:
  mandate history --url nats://127.0.0.1:4222 --resource account:alice-personal --since 168h
  mandate history --resource account:alice-personal --principal user:carol --action withdraw
  mandate history --resource 'Brokerage::Account::\"alice-personal\"' | jq -c '{time, principal, action, decision}'

Only the resource's own subject is read (an ordered consumer filtered to it): no scan of
the stream. `--principal` and `--action` filter those lines here.

Exit codes: 0 printed (perhaps nothing), 2 usage (a type the schema does not declare),
3 the history cannot be read (server, stream).")]
    History(HistoryArgs),
    /// AuthZEN search from the command line: who may, on what, which actions.
    #[command(after_help = "\
Examples:
  # who can withdraw from alice-personal (to her bank account)?
  mandate search subject --type user --action withdraw --resource account:alice-personal \\
      --context '{\"destination\":{\"type\":\"Brokerage::Destination\",\"id\":\"alice-bank\"},\"amount\":\"500.00\"}'
  # which accounts can grace trade on?
  mandate search resource --principal user:grace --action place_order --type account \\
      --context '{\"side\":\"buy\",\"instrument\":\"AAPL\"}'
  # which actions may carol perform on alice-personal (buying AAPL)?
  mandate search action --principal user:carol --resource account:alice-personal \\
      --context '{\"side\":\"buy\",\"instrument\":\"AAPL\"}'
  (an action whose context the given one lacks is listed under `context.skipped`, not omitted)

Exit codes: 0 searched (the results may be empty), 2 usage.")]
    Search(SearchArgs),
    /// List every setting: its `mandate.toml` key, `MANDATE_…` variable,
    /// flag, default and what it does (docs/configuration.md's table).
    #[command(after_help = "\
Examples:
  mandate settings
  mandate settings | grep cache.

Exit codes: 0.")]
    Settings,
}

/// Parses the command line and runs the subcommand: its exit code is the
/// process's.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Diagnostics wrap to the width of a person's terminal; in a pipe or a
    // log, each message stays on its line, whole, for grep and scripts.
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let _ = miette::set_hook(Box::new(|_| {
            Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
        }));
    }
    let (Ok(code) | Err(code)) = match cli.command {
        Command::Serve(args) => cli::serve::run(&args),
        Command::Check(args) => cli::check::run(&args),
        Command::Validate(args) => cli::validate::run(&args),
        Command::Test(args) => cli::test::run(&args),
        Command::Verify(args) => cli::verify::run(&args),
        Command::Replay(args) => cli::replay::run(&args),
        Command::ServeStore(args) => cli::serve_store::run(&args),
        Command::Publish(args) => cli::publish::run(&args),
        Command::Search(args) => cli::search::run(&args),
        Command::History(args) => cli::history::run(&args),
        Command::Settings => cli::settings::run(),
    };
    code.into()
}
