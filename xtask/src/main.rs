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
//!   `manager`, `cached`, `redis`, `sql`, `sled`) and rewrites their numbers
//!   in README.md.
//! * `bench load [--seconds N] [--runs N] [--only VARIANT,...]`: every load-test server variant
//!   (ours, the bare frameworks, tower-sessions, actix-session) under wrk;
//!   writes BENCHMARKS.md. With `--only`, just those variants, and the
//!   medians go to stdout instead (for comparing two builds).
//! * `bench capacity`: CAPACITY.md, the capacity model, computed from the
//!   figures BENCHMARKS.md holds (also done at the end of `bench load`).
//! * `bench profile [--label L] [--bin PATH]`: instructions per request under
//!   callgrind and system calls per request under strace, for the cases
//!   BENCHMARKS.md's profile tables list; writes (or replaces) the row `L`.
//! * `redis-cluster`: starts a throwaway 3-master Redis Cluster on free
//!   loopback ports, prints its `REDIS_CLUSTER_URLS`, and stops it on Enter.
//! * `redis`, `postgres`, `mariadb`: start a throwaway Redis, PostgreSQL
//!   (`initdb`) or MariaDB (`mariadb-install-db`), the last two with TLS on
//!   when `openssl` can make a certificate, in a temporary directory on a
//!   free loopback port, print its `REDIS_URL`, `DATABASE_URL_POSTGRES` or
//!   `DATABASE_URL_MYSQL`, and stop it on Enter (or Ctrl-C).
//!
//! `test` starts that throwaway cluster for the Redis Cluster tests (when
//! `redis-server` is installed and `REDIS_CLUSTER_URLS` is not set), and a
//! throwaway Redis, PostgreSQL or MariaDB for each of those that does not
//! answer on its standard port and has no URL in the environment, when its
//! server is installed (in CI, `services --start` must bring up the
//! machine's own instead), and a throwaway MariaDB with TLS for the MySQL
//! TLS tests unless `DATABASE_URL_MYSQL_TLS` is set; outside CI, a store
//! whose server can be neither reached nor started is reported as skipped
//! at the end of the run.

mod capacity;
mod load;
mod profile;
mod throwaway;

use std::env;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread::sleep;
use std::time::{Duration, Instant};

use throwaway::Throwaway;

pub(crate) type Result<T = (), E = String> = std::result::Result<T, E>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if let Err(e) = throwaway::stop_on_signals() {
        eprintln!("xtask: {e}");
        return ExitCode::FAILURE;
    }
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("services") => services(args.iter().any(|a| a == "--start"), false).map(drop),
        Some("bench") if args.get(1).map(String::as_str) == Some("load") => {
            let flag = |name: &str, default: u64| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default)
            };
            let only = match args.iter().position(|a| a == "--only") {
                None => Ok(None),
                Some(i) => match args.get(i + 1) {
                    Some(list) if !list.starts_with("--") => Ok(Some(list.as_str())),
                    _ => Err("--only needs a comma-separated list of variants".to_owned()),
                },
            };
            only.and_then(|only| {
                let runs = flag("--runs", 3) as u32;
                if runs < 1 || (only.is_none() && runs < 3) {
                    return Err(
                        "a full load run takes at least 3 runs (--runs 3): the table shows medians"
                            .to_owned(),
                    );
                }
                load::bench_load(flag("--seconds", 10), runs, only)
            })
        }
        Some("bench") if args.get(1).map(String::as_str) == Some("capacity") => capacity::write(),
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
        Some("redis-cluster") => throwaway::redis_cluster()
            .and_then(|(urls, nodes)| throwaway::foreground("REDIS_CLUSTER_URLS", &urls, nodes)),
        Some(name) if SERVICES.iter().any(|s| s.command == name) => {
            let service = SERVICES.iter().find(|s| s.command == name);
            let service = service.expect("just found");
            (service.throwaway)().and_then(|server| {
                let url = (service.url)(server.port);
                throwaway::foreground(service.env, &url, vec![server])
            })
        }
        _ => {
            eprintln!("usage: cargo xtask <test | services [--start] | bench [manager|cached|redis|sql|sled] | bench load [--seconds N] [--runs N] [--only VARIANT,...] | bench capacity | bench profile [--label L] [--bin PATH] | redis-cluster | redis | postgres | mariadb>");
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
    let mut command = Command::new(cargo);
    command
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v.as_str())))
        .current_dir(root());
    let status = throwaway::run_in_group(command).map_err(|e| format!("cannot run cargo: {e}"))?;
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
    let ci = in_ci();
    // Outside CI, a server that refuses the tests' login counts as missing:
    // a throwaway replaces it.
    let missing = services(ci, !ci)?;
    let mut envs = Vec::new();
    if ci {
        // The tests fail rather than skip when `CI` is exactly `true`;
        // CI systems that set `CI=1` get the same.
        envs.push(("CI", "true".to_owned()));
    }
    let mut throwaways = Vec::new();
    let mut skipped = Vec::new();
    if env::var("REDIS_CLUSTER_URLS").is_err() {
        match throwaway::redis_cluster() {
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
    let mut mariadb_failed = None;
    for service in SERVICES.iter().filter(|s| missing.contains(&s.name)) {
        match (service.throwaway)() {
            Ok(server) => {
                let url = (service.url)(server.port);
                eprintln!(
                    "xtask: started a throwaway {}: {}={url}",
                    service.name, service.env
                );
                envs.push((service.env, url));
                throwaways.push(server);
            }
            Err(e) => {
                if service.name == "MariaDB" {
                    mariadb_failed = Some(e.clone());
                }
                skipped.push(format!(
                    "{} store tests ({e}; install: {}, or set {})",
                    service.name, service.install, service.env
                ));
            }
        }
    }
    let openssl = throwaway::openssl_available();
    let mut need_openssl = vec!["Redis"];
    // MySQL over TLS: the server of `DATABASE_URL_MYSQL_TLS`, or else a
    // throwaway MariaDB, which has TLS on (Debian's MariaDB has it off).
    if env::var("DATABASE_URL_MYSQL_TLS").is_err() {
        let throwaway_mysql = envs.iter().find(|(k, _)| *k == "DATABASE_URL_MYSQL");
        let url = match (openssl, throwaway_mysql) {
            (false, _) => {
                need_openssl.push("MySQL");
                None
            }
            (true, Some((_, url))) => Some(Ok(url.clone())),
            // The same failure again, as it just did for the store tests.
            (true, None) if mariadb_failed.is_some() => mariadb_failed.map(Err),
            (true, None) => Some(Throwaway::mariadb().map(|server| {
                let url = mariadb_url(server.port);
                throwaways.push(server);
                url
            })),
        };
        match url {
            Some(Ok(url)) => {
                eprintln!("xtask: MySQL TLS tests on DATABASE_URL_MYSQL_TLS={url}");
                envs.push(("DATABASE_URL_MYSQL_TLS", url));
            }
            Some(Err(e)) => skipped.push(format!(
                "MySQL TLS tests ({e}; install: apt-get install mariadb-server, or set DATABASE_URL_MYSQL_TLS)"
            )),
            None => {}
        }
    }
    if envs.iter().any(|(k, _)| *k == "DATABASE_URL_POSTGRES") {
        need_openssl.push("PostgreSQL");
    }
    if !openssl {
        skipped.push(format!(
            "{} TLS tests (install: apt-get install openssl)",
            need_openssl.join(", ")
        ));
    }
    if ci && !skipped.is_empty() {
        return Err(format!("CI needs every server: {}", skipped.join("; ")));
    }
    // Where the tests record what they skipped (`session_core::testing::skip`):
    // `cargo test` shows nothing a passing test printed.
    let skips_file = env::temp_dir().join(format!("session-xtask-skips-{}", std::process::id()));
    let _ = fs::remove_file(&skips_file);
    envs.push((SKIPS_FILE_VAR, skips_file.to_string_lossy().into_owned()));
    let result = cargo(&["test", "--workspace", "--all-features"], &envs);
    drop(throwaways);
    let recorded = fs::read_to_string(&skips_file).unwrap_or_default();
    let _ = fs::remove_file(&skips_file);
    skipped.extend(skipped_tests(&recorded));
    for s in &skipped {
        eprintln!("xtask: SKIPPED: {s}");
    }
    result
}

/// The variable naming the file where the tests record each skip
/// (`session_core::testing::SKIPS_FILE_VAR`).
const SKIPS_FILE_VAR: &str = "SESSION_TEST_SKIPS";

/// The reasons the tests recorded for their skips, each once, with how many
/// tests gave it, in the order first recorded.
fn skipped_tests(recorded: &str) -> Vec<String> {
    let mut reasons: Vec<(&str, usize)> = Vec::new();
    for line in recorded.lines().filter(|l| !l.trim().is_empty()) {
        match reasons.iter_mut().find(|(r, _)| *r == line) {
            Some((_, n)) => *n += 1,
            None => reasons.push((line, 1)),
        }
    }
    reasons
        .into_iter()
        .map(|(reason, n)| match n {
            1 => format!("1 test: {reason}"),
            n => format!("{n} tests: {reason}"),
        })
        .collect()
}

/// The URL of a throwaway PostgreSQL ([`Throwaway::postgres`]).
fn postgres_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// The URL of a throwaway MariaDB ([`Throwaway::mariadb`]).
fn mariadb_url(port: u16) -> String {
    format!("mysql://root@127.0.0.1:{port}/test")
}

/// A local server the stores' tests use.
struct Service {
    name: &'static str,
    /// The command that starts a throwaway one (`cargo xtask postgres`).
    command: &'static str,
    addr: &'static str,
    env: &'static str,
    start: &'static [&'static str],
    install: &'static str,
    /// A client command that exits successfully when the tests can log in
    /// to the machine's server on `addr` as their default URL does, if the
    /// client is installed: a server that answers but refuses that login
    /// (a stock Debian PostgreSQL asks for a password, a stock MariaDB lets
    /// root in only through its socket; neither has a `test` database) is
    /// replaced by a throwaway outside CI, as one that does not answer is.
    login: &'static [&'static str],
    /// Starts a server of the test run's own when the machine's does not
    /// answer.
    throwaway: fn() -> Result<Throwaway>,
    /// The URL of that server, from its port.
    url: fn(u16) -> String,
}

const SERVICES: &[Service] = &[
    Service {
        name: "Redis",
        command: "redis",
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
        login: &[],
        throwaway: || Throwaway::redis(&[]),
        url: |port| format!("redis://127.0.0.1:{port}"),
    },
    Service {
        name: "PostgreSQL",
        command: "postgres",
        addr: "127.0.0.1:5432",
        env: "DATABASE_URL_POSTGRES",
        start: &[
            "sh",
            "-c",
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql | sort -V | tail -n 1) main start",
        ],
        install: "apt-get install postgresql",
        login: &[
            "psql",
            "-X",
            "-w",
            "-d",
            "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5 options='-c statement_timeout=5000'",
            "-c",
            "select 1",
        ],
        throwaway: Throwaway::postgres,
        url: postgres_url,
    },
    Service {
        name: "MariaDB",
        command: "mariadb",
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
        login: &[
            "mariadb",
            "--no-defaults",
            "--protocol=tcp",
            "--skip-ssl",
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "--connect-timeout=5",
            "-e",
            "select 1",
            "test",
        ],
        throwaway: Throwaway::mariadb,
        url: mariadb_url,
    },
];

/// Whether this run is CI's: `CI` set to anything but empty, `false` or `0`.
fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

fn answers(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// The addresses of the server a URL names (`scheme://[user[:password]@]host[:port][/...]`),
/// on `default_port` when it names none; none for a URL that does not parse.
fn server_addrs(url: &str, default_port: u16) -> Vec<SocketAddr> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.socket_addrs(|| Some(default_port)).ok())
        .unwrap_or_default()
}

/// Whether the server a URL names accepts a connection.
fn url_answers(url: &str, default_port: u16) -> bool {
    server_addrs(url, default_port)
        .iter()
        .any(|a| TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok())
}

/// Whether a service's `login` check ran and failed; `false` without a
/// check or without its client installed (the tests then find out).
fn refuses_login(login: &[&str]) -> bool {
    let Some((program, args)) = login.split_first() else {
        return false;
    };
    Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| !status.success())
}

/// Reports (and with `start`, starts) the local servers, and returns the
/// names of those that still do not answer (with `check_logins`, also of
/// those that answer but refuse the tests' login). With `start`, a server
/// that cannot be started is an error.
fn services(start: bool, check_logins: bool) -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for s in SERVICES {
        if let Ok(url) = env::var(s.env) {
            let default_port = s
                .addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or(0);
            if url_answers(&url, default_port) {
                eprintln!("xtask: {}: using {} from the environment", s.name, s.env);
                continue;
            }
            // A server the environment names but that does not answer: the
            // tests would skip it quietly (their output is captured).
            eprintln!(
                "xtask: WARNING: {} at {} (from the environment) does not answer",
                s.name, s.env
            );
            missing.push(s.name);
            continue;
        }
        if answers(s.addr) {
            if check_logins && refuses_login(s.login) {
                eprintln!(
                    "xtask: {} answers on {} but refuses the tests' login (`{}` failed); using a server of this run's own",
                    s.name,
                    s.addr,
                    s.login.join(" ")
                );
                missing.push(s.name);
                continue;
            }
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
        package: "session-memory",
        bench: "cached",
        group: "cached",
        ratios: &[
            (
                "load through CachedStore / MemoryStore load",
                "cached_load",
                "memory_load",
            ),
            (
                "save through CachedStore / MemoryStore save",
                "cached_save",
                "memory_save",
            ),
        ],
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

    /// Only a check that ran and failed counts as a refused login: no check,
    /// or a client that is not installed, leaves the server to the tests.
    #[test]
    fn a_login_is_refused_only_when_its_check_ran_and_failed() {
        assert!(refuses_login(&["false"]));
        assert!(!refuses_login(&["true"]));
        assert!(!refuses_login(&[]));
        assert!(!refuses_login(&[
            "no-such-client-installed-here",
            "-c",
            "select 1"
        ]));
        // The machine's own servers, where their clients are installed, let
        // the tests in (CI's servers are set up so).
        for service in SERVICES {
            if in_ci() && answers(service.addr) && env::var(service.env).is_err() {
                assert!(!refuses_login(service.login), "{}", service.name);
            }
        }
    }

    #[test]
    fn reads_the_median_from_criterion_estimates() {
        let json = r#"{"mean":{"point_estimate":5.0},"median":{"confidence_interval":{"lower_bound":1.0},"point_estimate":1234.5,"standard_error":2.0}}"#;
        assert_eq!(median_ns(json), Some(1234.5));
        assert_eq!(median_ns("{}"), None);
    }

    #[test]
    fn finds_the_address_of_server_urls() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", vec!["127.0.0.1:6379"]),
            ("redis://:secret@127.0.0.1:6380/15", vec!["127.0.0.1:6380"]),
            ("postgres://postgres@127.0.0.1/test", vec!["127.0.0.1:6379"]),
            (
                "mysql://root:pw@127.0.0.1:3307/test?ssl-mode=REQUIRED",
                vec!["127.0.0.1:3307"],
            ),
            ("redis://[::1]:6380", vec!["[::1]:6380"]),
            ("redis://[::1]", vec!["[::1]:6379"]),
            ("not a url", vec![]),
        ] {
            let want: Vec<SocketAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
            assert_eq!(server_addrs(url, 6379), want, "{url}");
        }
    }

    #[test]
    fn lists_each_recorded_skip_once_with_its_count() {
        let recorded = "Redis at a (refused)\nbrowser test (no chromium)\n\nRedis at a (refused)\n";
        assert_eq!(
            skipped_tests(recorded),
            [
                "2 tests: Redis at a (refused)",
                "1 test: browser test (no chromium)"
            ]
        );
        assert!(skipped_tests("").is_empty());
    }

    #[test]
    fn formats_durations() {
        assert_eq!(human_ns(512.0), "512 ns");
        assert_eq!(human_ns(1_500.0), "1.50 µs");
        assert_eq!(human_ns(2_000_000.0), "2.00 ms");
    }
}
