//! Repository chores, run as `cargo xtask <command>`:
//!
//! * `test`: formatting check, clippy with warnings denied (the workspace,
//!   `session-core` with its default features, and `session-sql` with each
//!   database feature alone and with none), docs with broken
//!   links denied, then every test of the workspace (unit, conformance,
//!   integration, doc tests).
//! * `services`: reports which local servers (Redis, PostgreSQL, MariaDB)
//!   answer; `services --start` starts the missing ones from installed
//!   binaries.
//! * `bench [group]`: runs the criterion benchmarks (all, or one group:
//!   `manager`, `redis`, `sql`, `sled`) and rewrites their numbers in README.md.
//! * `bench load [--seconds N] [--runs N]`: every load-test server variant
//!   (ours, the bare frameworks, tower-sessions, actix-session) under wrk;
//!   writes BENCHMARKS.md.
//! * `bench profile [--label L] [--bin PATH]`: instructions per request under
//!   callgrind and system calls per request under strace, for the cases
//!   BENCHMARKS.md's profile tables list; writes (or replaces) the row `L`.
//! * `redis-cluster`: starts a throwaway 3-master Redis Cluster on free
//!   loopback ports, prints its `REDIS_CLUSTER_URLS`, and stops it on Enter.
//!
//! `test` starts that throwaway cluster for the Redis Cluster tests (when
//! `redis-server` is installed and `REDIS_CLUSTER_URLS` is not set) and a
//! throwaway Redis when none answers on the standard port.

mod load;
mod profile;

use std::env;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) type Result<T = (), E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("services") => services(args.iter().any(|a| a == "--start")).map(drop),
        Some("bench") if args.get(1).map(String::as_str) == Some("load") => {
            let flag = |name: &str, default: u64| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            load::bench_load(flag("--seconds", 10), flag("--runs", 3) as u32)
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("profile") => {
            let value = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .cloned()
            };
            profile::bench_profile(
                &value("--label").unwrap_or_else(|| "current".to_owned()),
                value("--bin").map(PathBuf::from),
            )
        }
        Some("bench") => bench(args.get(1).map(String::as_str)),
        Some("redis-cluster") => redis_cluster_foreground(),
        _ => {
            eprintln!("usage: cargo xtask <test | services [--start] | bench [manager|redis|sql|sled] | bench load [--seconds N] [--runs N] | bench profile [--label L] [--bin PATH] | redis-cluster>");
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

pub(crate) fn root() -> PathBuf {
    // `cargo run` (the `cargo xtask` alias) says where this checkout is. The
    // path baked in at build time can name another clone: clones that share
    // one CARGO_TARGET_DIR (as `.ci/run` arranges) share this binary too.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&manifest_dir)
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn cargo(args: &[&str], envs: &[(&str, String)]) -> Result {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v.as_str())))
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
    // What a store or an application builds: session-core without the
    // `conformance` feature that the workspace check above turns on.
    cargo(
        &[
            "clippy",
            "-p",
            "session-core",
            "--lib",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // A user enables one database: each backend alone must build clean too
    // (the workspace check above unifies them), and so must the crate with
    // none. Library target only: the tests' dev-dependencies enable every
    // backend of sqlx.
    for backend in ["postgres", "mysql", "sqlite", ""] {
        cargo(
            &[
                "clippy",
                "-p",
                "session-sql",
                "--lib",
                "--no-default-features",
                "--features",
                backend,
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
    }
    cargo(
        &["doc", "--workspace", "--no-deps", "--all-features"],
        &[("RUSTDOCFLAGS", "-D warnings".into())],
    )?;
    let ci = env::var("CI").is_ok_and(|v| v == "true");
    let missing = services(ci)?;
    let mut envs = Vec::new();
    let mut throwaways = Vec::new();
    let mut skipped = Vec::new();
    if missing.contains(&"Redis") {
        match Throwaway::redis(&[]) {
            Ok(server) => {
                eprintln!("xtask: started a throwaway Redis on port {}", server.port);
                envs.push(("REDIS_URL", format!("redis://127.0.0.1:{}", server.port)));
                throwaways.push(server);
            }
            Err(e) => skipped.push(format!(
                "Redis store tests ({e}; install: apt-get install redis-server)"
            )),
        }
    }
    if env::var("REDIS_CLUSTER_URLS").is_err() {
        match redis_cluster() {
            Ok((urls, nodes)) => {
                eprintln!("xtask: started a throwaway Redis Cluster: {urls}");
                envs.push(("REDIS_CLUSTER_URLS", urls));
                throwaways.extend(nodes);
            }
            Err(e) => skipped.push(format!(
                "Redis Cluster tests ({e}; install: apt-get install redis-server redis-tools)"
            )),
        }
    }
    for (name, what) in [
        ("PostgreSQL", "PostgreSQL store tests (install: apt-get install postgresql, or set DATABASE_URL_POSTGRES)"),
        ("MariaDB", "MySQL/MariaDB store tests (install: apt-get install mariadb-server, or set DATABASE_URL_MYSQL)"),
    ] {
        if missing.contains(&name) {
            skipped.push(what.to_owned());
        }
    }
    // The Redis TLS tests make their certificate authority with `openssl`.
    let openssl = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !openssl.is_ok_and(|s| s.success()) {
        skipped.push("Redis TLS tests (install: apt-get install openssl)".to_owned());
    }
    if ci && !skipped.is_empty() {
        return Err(format!("CI needs every server: {}", skipped.join("; ")));
    }
    let result = cargo(&["test", "--workspace", "--all-features"], &envs);
    drop(throwaways);
    for s in &skipped {
        eprintln!("xtask: SKIPPED: {s}");
    }
    result
}

/// A server process of the test run's own, killed on drop.
struct Throwaway {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that is free, and whose cluster bus port (+10000) is too.
fn free_port() -> Result<u16> {
    for _ in 0..50 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port pair".into())
}

impl Throwaway {
    /// Starts `redis-server` on a free port in a temporary directory.
    fn redis(extra: &[&str]) -> Result<Self> {
        let port = free_port()?;
        let dir = env::temp_dir().join(format!("session-xtask-redis-{port}"));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let server = Self { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(&format!("127.0.0.1:{port}")) {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

/// Starts three cluster-enabled servers and joins them into a cluster of
/// three masters; returns `REDIS_CLUSTER_URLS` and the processes.
fn redis_cluster() -> Result<(String, Vec<Throwaway>)> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Throwaway::redis(&[
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "5000",
        ])?);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = addrs.iter().all(|a| {
            let port = a.rsplit(':').next().unwrap_or_default();
            Command::new("redis-cli")
                .args(["-p", port, "cluster", "info"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err("the cluster did not reach cluster_state:ok".into());
        }
        sleep(Duration::from_millis(200));
    }
    let urls = addrs
        .iter()
        .map(|a| format!("redis://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok((urls, nodes))
}

fn redis_cluster_foreground() -> Result {
    let (urls, nodes) = redis_cluster()?;
    println!("REDIS_CLUSTER_URLS={urls}");
    eprintln!("xtask: cluster running; press Enter to stop it");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(nodes);
    Ok(())
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

/// Reports (and with `start`, starts) the local servers, and returns the
/// names of those that still do not answer. With `start`, a server that
/// cannot be started is an error.
fn services(start: bool) -> Result<Vec<&'static str>> {
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
            "xtask: WARNING: {} does not answer on {} (install: {})",
            s.name, s.addr, s.install
        );
        missing.push(s.name);
    }
    if start && !missing.is_empty() {
        return Err(format!("servers not available: {}", missing.join(", ")));
    }
    Ok(missing)
}

/// One criterion bench and the README section it fills.
struct Bench {
    package: &'static str,
    bench: &'static str,
    /// The criterion group, also the README marker (`<!-- bench-GROUP:start -->`).
    group: &'static str,
    /// Throughput ratios to report: (label, ours, reference).
    ratios: &'static [(&'static str, &'static str, &'static str)],
    /// More lines from files the bench leaves in its criterion folder.
    extra: fn(&Path) -> Vec<String>,
}

fn no_extra(_: &Path) -> Vec<String> {
    Vec::new()
}

/// The sled bench leaves the disk used by 100 000 sessions.
fn sled_disk(group: &Path) -> Vec<String> {
    fs::read_to_string(group.join("disk_per_100k.txt"))
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .map(|bytes| {
            vec![format!(
                "* disk: **{:.1} MiB** for 100 000 sessions ({:.0} bytes per session)",
                bytes / 1_048_576.0,
                bytes / 100_000.0
            )]
        })
        .unwrap_or_default()
}

const BENCHES: &[Bench] = &[
    Bench {
        package: "session-memory",
        bench: "manager",
        group: "manager",
        ratios: &[],
        extra: no_extra,
    },
    Bench {
        package: "session-redis",
        bench: "redis",
        group: "redis",
        ratios: &[
            ("load / raw GET", "store_load", "raw_get"),
            ("save / raw SET", "store_save", "raw_set"),
        ],
        extra: no_extra,
    },
    Bench {
        package: "session-sql",
        bench: "sql",
        group: "sql",
        ratios: &[
            (
                "PostgreSQL load / raw SELECT",
                "postgres_load",
                "postgres_raw_select",
            ),
            (
                "PostgreSQL save / raw UPDATE",
                "postgres_save",
                "postgres_raw_update",
            ),
            (
                "MariaDB load / raw SELECT",
                "mysql_load",
                "mysql_raw_select",
            ),
            (
                "MariaDB save / raw UPDATE",
                "mysql_save",
                "mysql_raw_update",
            ),
        ],
        extra: no_extra,
    },
    Bench {
        package: "session-sled",
        bench: "sled",
        group: "sled",
        ratios: &[],
        extra: sled_disk,
    },
];

/// Runs the benchmarks, then writes their medians into README.md between the
/// `<!-- bench-GROUP:start -->` and `<!-- bench-GROUP:end -->` markers.
fn bench(only: Option<&str>) -> Result {
    let target = env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let readme = root().join("README.md");
    for b in BENCHES.iter().filter(|b| only.is_none_or(|g| g == b.group)) {
        cargo(
            &[
                "bench",
                "-p",
                b.package,
                "--bench",
                b.bench,
                "--all-features",
            ],
            &[],
        )?;
        let group = target.join("criterion").join(b.group);
        let mut medians = Vec::new();
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
            let median =
                median_ns(&text).ok_or_else(|| format!("{name}: no median in estimates"))?;
            medians.push((name, median));
        }
        let rows: Vec<String> = medians
            .iter()
            .map(|(name, ns)| format!("| `{name}` | {} | {:.0} |", human_ns(*ns), 1e9 / ns))
            .collect();
        let find = |n: &str| medians.iter().find(|(m, _)| m == n).map(|(_, ns)| *ns);
        let mut ratios: Vec<String> = b
            .ratios
            .iter()
            .filter_map(|(label, ours, reference)| {
                Some(format!(
                    "* {label}: **{:.2}** of the raw rate",
                    find(reference)? / find(ours)?
                ))
            })
            .collect();
        ratios.extend((b.extra)(&group));
        let mut section = format!(
            "| benchmark | median time | per second (sequential, one core) |\n|---|---|---|\n{}\n",
            rows.join("\n")
        );
        if !ratios.is_empty() {
            section.push('\n');
            section.push_str(&ratios.join("\n"));
            section.push('\n');
        }
        section.push_str(&format!(
            "\nMeasured by `cargo xtask bench` on {} ({} cores).",
            env::consts::ARCH,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ));
        let text = fs::read_to_string(&readme).map_err(|e| e.to_string())?;
        let start = format!("<!-- bench-{}:start -->", b.group);
        let end = format!("<!-- bench-{}:end -->", b.group);
        let (Some(a), Some(z)) = (text.find(&start), text.find(&end)) else {
            return Err(format!("README.md lacks the {start} markers"));
        };
        let updated = format!("{}{start}\n{section}\n{}", &text[..a], &text[z..]);
        fs::write(&readme, updated).map_err(|e| e.to_string())?;
        eprintln!("xtask: README.md updated ({}):\n{section}", b.group);
    }
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
