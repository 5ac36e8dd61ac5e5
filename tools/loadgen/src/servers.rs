//! The servers under load: started as processes, pinned to a core, their
//! CPU time and resident memory read from `/proc`, killed when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Options;

/// Pins process `pid` (all its threads) to `cores` with taskset; false when
/// taskset is missing, and the report says the numbers are unpinned.
pub fn pin(pid: u32, cores: &str) -> bool {
    Command::new("taskset")
        .args(["-apc", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server process, killed when dropped.
pub struct Server {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `command` (its output to `log`, or discarded), pins it to
    /// `core`, and waits until it accepts connections on `addr`.
    pub fn start(
        name: &'static str,
        mut command: Command,
        addr: SocketAddr,
        core: &str,
        log: Option<&Path>,
    ) -> Self {
        // Each run starts its file afresh (a run's decision log is
        // gigabytes: appended run after run it would fill the disk); both
        // streams then append to it, so neither overwrites the other.
        if let Some(path) = log {
            std::fs::File::create(path).unwrap();
        }
        let output = || match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let child = command
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        pin(child.id(), core);
        let server = Self { name, addr, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// CPU seconds the process has used in user space and in the kernel
    /// (all threads).
    pub fn cpu_split(&self) -> (f64, f64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // After the command name: state is field 0, utime 11, stime 12.
        (ticks(11) / 100.0, ticks(12) / 100.0)
    }

    /// Resident memory in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

/// An address nothing listens on yet.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// How a Mandate under load logs its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionLog {
    /// the default configuration: decision lines on stdout, which the
    /// harness sends to a file
    Default,
    /// `log.decisions = "off"`
    Off,
}

/// Mandate over the entity store at `upstream`, pinned to core 0.
pub fn mandate(
    options: &Options,
    name: &'static str,
    upstream: SocketAddr,
    log: DecisionLog,
    env: &[(&str, &str)],
) -> Server {
    mandate_binary(options, &options.mandate, name, upstream, log, env)
}

/// The same, from another build of Mandate (a baseline to compare with).
pub fn mandate_binary(
    options: &Options,
    binary: &Path,
    name: &'static str,
    upstream: SocketAddr,
    log: DecisionLog,
    env: &[(&str, &str)],
) -> Server {
    let addr = free_addr();
    let mut command = Command::new(binary);
    command
        .current_dir(crate::root())
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--upstream", &format!("http://{upstream}")])
        .env("MANDATE_LOG_LEVEL", "warn");
    if log == DecisionLog::Off {
        command.env("MANDATE_LOG_DECISIONS", "off");
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let file = options
        .out
        .join(format!("{}.log", name.replace([' ', '(', ')', ','], "-")));
    Server::start(name, command, addr, "0", Some(&file))
}

/// The reference entity store serving `entities`, pinned to core 1 (the
/// load generator's: its work is not charged to the server).
pub fn store(options: &Options, entities: &Path, latency: Duration) -> Server {
    store_with(
        options,
        entities,
        &["--latency", &format!("{}ms", latency.as_millis())],
    )
}

/// The reference entity store with more arguments (`--nats`, …), pinned
/// to core 1.
pub fn store_with(options: &Options, entities: &Path, args: &[&str]) -> Server {
    let addr = free_addr();
    let mut command = Command::new(&options.mandate);
    command
        .args(["serve-store", "--listen", &addr.to_string(), "--entities"])
        .arg(entities)
        .args(args);
    Server::start("entity store", command, addr, "1", None)
}

/// The floor, this binary serving a fixed answer, pinned to core 0.
pub fn floor() -> Server {
    let addr = free_addr();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--floor", &addr.to_string()]);
    Server::start("floor (bare hyper)", command, addr, "0", None)
}

/// The Cerbos PDP with the place_order rules, when its binary is there.
pub fn cerbos(options: &Options) -> Option<Server> {
    let binary = existing(&options.cerbos)?;
    let root = crate::root();
    let (http, grpc) = (free_addr(), free_addr());
    let config = std::fs::read_to_string(root.join("benches/cerbos/config.yaml"))
        .unwrap()
        .replace("{HTTP}", &http.to_string())
        .replace("{GRPC}", &grpc.to_string())
        .replace(
            "{POLICIES}",
            &root.join("benches/cerbos/policies").display().to_string(),
        );
    let file = crate::scratch().join("cerbos.yaml");
    std::fs::write(&file, config).unwrap();
    let mut command = Command::new(binary);
    command.args(["server", &format!("--config={}", file.display())]);
    Some(Server::start("cerbos", command, http, "0", None))
}

/// cedar-agent with the same one-rule place_order policy and its data,
/// when its binary is there.
pub fn cedar_agent(options: &Options) -> Option<Server> {
    let binary = existing(&options.cedar_agent)?;
    let dir = crate::root().join("benches/cedar-agent");
    let addr = free_addr();
    let mut command = Command::new(binary);
    command
        .args(["--addr", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--log-level", "error"])
        .arg("--policies")
        .arg(dir.join("policies.json"))
        .arg("--data")
        .arg(dir.join("data.json"));
    Some(Server::start("cedar-agent", command, addr, "0", None))
}

fn existing(path: &Path) -> Option<PathBuf> {
    path.exists().then(|| path.to_owned())
}
