//! Repository chores, run as `cargo xtask <command>`:
//!
//! * `test`: formatting check, clippy with warnings denied, docs with broken
//!   links denied, then every test of the workspace (unit, conformance,
//!   integration, doc tests).
//! * `services`: reports which local servers (Redis, PostgreSQL, MariaDB)
//!   answer; `services --start` starts the missing ones from installed
//!   binaries.
//! * `bench`: runs the criterion benchmarks and rewrites the numbers in
//!   README.md from their results.

use std::env;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

type Result<T = (), E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("services") => services(args.iter().any(|a| a == "--start")),
        Some("bench") => bench(),
        _ => {
            eprintln!("usage: cargo xtask <test | services [--start] | bench>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

fn test() -> Result {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    services(env::var("CI").is_ok_and(|v| v == "true"))?;
    cargo(&["test", "--workspace", "--all-features"], &[])
}

/// A local server the stores' tests use.
struct Service {
    name: &'static str,
    addr: &'static str,
    env: &'static str,
    start: &'static [&'static str],
    install: &'static str,
}

const SERVICES: &[Service] = &[
    Service {
        name: "Redis",
        addr: "127.0.0.1:6379",
        env: "REDIS_URL",
        start: &[
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        install: "apt-get install redis-server",
    },
    Service {
        name: "PostgreSQL",
        addr: "127.0.0.1:5432",
        env: "DATABASE_URL_POSTGRES",
        start: &[
            "sh",
            "-c",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
        ],
        install: "apt-get install postgresql",
    },
    Service {
        name: "MariaDB",
        addr: "127.0.0.1:3306",
        env: "DATABASE_URL_MYSQL",
        start: &[
            "start-stop-daemon",
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ],
        install: "apt-get install mariadb-server",
    },
];

fn answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// Reports (and with `start`, starts) the local servers. Stores whose tests
/// need a server report it as skipped, loudly, when it does not answer; in
/// CI a missing server is an error.
fn services(start: bool) -> Result {
    let mut missing = Vec::new();
    for s in SERVICES {
        if env::var(s.env).is_ok() {
            eprintln!("xtask: {}: using {} from the environment", s.name, s.env);
            continue;
        }
        if answers(s.addr) {
            eprintln!("xtask: {} answers on {}", s.name, s.addr);
            continue;
        }
        if start {
            eprintln!(
                "xtask: {} does not answer on {}; starting it",
                s.name, s.addr
            );
            let ran = Command::new(s.start[0]).args(&s.start[1..]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while ran.as_ref().is_ok_and(|st| st.success()) && Instant::now() < deadline {
                if answers(s.addr) {
                    break;
                }
                sleep(Duration::from_millis(250));
            }
            if answers(s.addr) {
                eprintln!("xtask: {} started", s.name);
                continue;
            }
        }
        eprintln!(
            "xtask: WARNING: {} does not answer on {}; its store tests will be skipped (install: {})",
            s.name, s.addr, s.install
        );
        missing.push(s.name);
    }
    if start && !missing.is_empty() {
        return Err(format!("servers not available: {}", missing.join(", ")));
    }
    Ok(())
}

/// Runs the benchmarks, then writes their medians into README.md between the
/// `<!-- bench:start -->` and `<!-- bench:end -->` markers.
fn bench() -> Result {
    cargo(
        &["bench", "-p", "session-memory", "--bench", "manager"],
        &[],
    )?;
    let target = env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let group = target.join("criterion").join("manager");
    let mut rows = Vec::new();
    let mut names: Vec<_> = fs::read_dir(&group)
        .map_err(|e| format!("no criterion results in {}: {e}", group.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("new/estimates.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let text = fs::read_to_string(group.join(&name).join("new/estimates.json"))
            .map_err(|e| format!("{name}: {e}"))?;
        let median = median_ns(&text).ok_or_else(|| format!("{name}: no median in estimates"))?;
        rows.push(format!(
            "| `{name}` | {} | {:.0} |",
            human_ns(median),
            1e9 / median
        ));
    }
    let table = format!(
        "| benchmark | median time | per second (one core) |\n|---|---|---|\n{}\n\n\
         Measured by `cargo xtask bench` on {} ({} cores).",
        rows.join("\n"),
        env::consts::ARCH,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let readme = root().join("README.md");
    let text = fs::read_to_string(&readme).map_err(|e| e.to_string())?;
    let (start, end) = ("<!-- bench:start -->", "<!-- bench:end -->");
    let (Some(a), Some(b)) = (text.find(start), text.find(end)) else {
        return Err("README.md lacks the bench markers".into());
    };
    let updated = format!("{}{start}\n{table}\n{}", &text[..a], &text[b..]);
    fs::write(&readme, updated).map_err(|e| e.to_string())?;
    eprintln!("xtask: README.md updated:\n{table}");
    Ok(())
}

/// The median point estimate, in nanoseconds, from criterion's
/// `estimates.json`.
fn median_ns(json: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_median_from_criterion_estimates() {
        let json = r#"{"mean":{"point_estimate":5.0},"median":{"confidence_interval":{"lower_bound":1.0},"point_estimate":1234.5,"standard_error":2.0}}"#;
        assert_eq!(median_ns(json), Some(1234.5));
        assert_eq!(median_ns("{}"), None);
    }

    #[test]
    fn formats_durations() {
        assert_eq!(human_ns(512.0), "512 ns");
        assert_eq!(human_ns(1_500.0), "1.50 µs");
        assert_eq!(human_ns(2_000_000.0), "2.00 ms");
    }
}
