//! Throwaway servers for a test run where the machine's own do not answer:
//! Redis, a Redis Cluster, PostgreSQL and MariaDB, each started from the
//! installed binaries on a free loopback port with its files in a temporary
//! directory, and stopped (the directory removed) when dropped, or when the
//! run is interrupted ([`stop_on_signals`]).

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{answers, Result};

/// A server process of the test run's own, stopped on drop.
pub(crate) struct Throwaway {
    pub(crate) port: u16,
    child: Child,
    dir: PathBuf,
    /// The signal (for `kill`) that shuts the server down cleanly; `None`
    /// kills it at once.
    stop: Option<&'static str>,
}

/// A throwaway's directory, from its creation, and its server once
/// started, for [`stop_on_signals`].
struct Scratch {
    /// The server's pid (also its process group's), once spawned.
    pid: Option<u32>,
    /// Its clean stop signal.
    stop: Option<&'static str>,
    dir: PathBuf,
}

/// Every throwaway directory there is now. The signal handler takes the
/// lock and keeps it until the process exits, so no server is spawned
/// after it looked.
static RUNNING: Mutex<Vec<Scratch>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<Scratch>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process group of the command xtask runs now (`cargo test`, ...),
/// which the signal handler stops with the servers: a SIGTERM sent to xtask
/// alone (a CI job cancelled, `timeout`) left the test binaries running.
/// The child is spawned, polled and reaped under the lock, which the
/// handler keeps once it has it: the handler can then wait for the command
/// to wind down (test binaries stopping throwaway servers of their own)
/// before it kills what is left of the group.
static COMMAND: Mutex<Option<Child>> = Mutex::new(None);

fn command() -> std::sync::MutexGuard<'static, Option<Child>> {
    COMMAND.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `command` to its end in a process group of its own, which
/// [`stop_on_signals`] stops on an interrupt: the terminal's Ctrl-C reaches
/// it through the handler, as it does the servers.
pub(crate) fn run_in_group(mut command_to_run: Command) -> std::io::Result<ExitStatus> {
    {
        let mut current = command();
        *current = Some(command_to_run.process_group(0).spawn()?);
    }
    loop {
        {
            let mut current = command();
            let Some(child) = current.as_mut() else {
                return Err(std::io::Error::other("the command's child went missing"));
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    *current = None;
                    return Ok(status);
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    *current = None;
                    return Err(e);
                }
            }
        }
        sleep(Duration::from_millis(50));
    }
}

/// Signals the server's whole process group (PostgreSQL's backends with
/// their postmaster).
fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let pid = self.child.id();
        // The pid stays registered, so that an interrupt now still stops the
        // server, until it is reaped, which happens under the lock: the
        // signal handler never signals a pid another process may have.
        let reap = |child: &mut Child, wait: bool| {
            let mut list = running();
            let reaped = if wait {
                child.wait().is_ok()
            } else {
                matches!(child.try_wait(), Ok(Some(_)))
            };
            if reaped {
                if let Some(s) = list.iter_mut().find(|s| s.pid == Some(pid)) {
                    s.pid = None;
                }
            }
            reaped
        };
        let mut reaped = false;
        if let Some(signal) = self.stop {
            kill(signal, pid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if reap(&mut self.child, false) {
                    reaped = true;
                    break;
                }
                sleep(Duration::from_millis(50));
            }
        }
        if !reaped {
            // The whole group: PostgreSQL's backends outlive their
            // postmaster's own kill.
            kill("-KILL", pid);
            let _ = self.child.kill();
            reap(&mut self.child, true);
        }
        let _ = fs::remove_dir_all(&self.dir);
        running().retain(|s| s.dir != self.dir);
    }
}

/// On SIGINT, SIGTERM or SIGHUP, stops every throwaway server, removes its
/// directory and exits. The servers run in process groups of their own, so
/// a Ctrl-C in the terminal reaches them only through this.
pub(crate) fn stop_on_signals() -> Result {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    std::thread::spawn(move || {
        let Some(signal) = signals.forever().next() else {
            return;
        };
        // Held until the exit: nothing is spawned after this.
        let mut foreground = command();
        let group = foreground.as_ref().map(Child::id);
        if let Some(pid) = group {
            kill(&format!("-{signal}"), pid);
        }
        let mut list = running();
        let scratches = std::mem::take(&mut *list);
        let servers: Vec<u32> = scratches.iter().filter_map(|s| s.pid).collect();
        for s in &scratches {
            if let Some(pid) = s.pid {
                kill(s.stop.unwrap_or("-KILL"), pid);
            }
        }
        if !servers.is_empty() {
            // A clean stop takes PostgreSQL a moment; the pids stay ours
            // (unreaped children) until this process exits.
            sleep(Duration::from_millis(500));
        }
        if let (Some(pid), Some(child)) = (group, foreground.as_mut()) {
            // The command's own handlers (xtask's tests stop throwaway
            // servers of theirs, which takes them half a second) get up to
            // ten seconds; then what is left of the group goes.
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(Duration::from_millis(50));
            }
            kill("-KILL", pid);
        }
        for s in &scratches {
            if let Some(pid) = s.pid {
                kill("-KILL", pid);
            }
            // A server's last writes may race the first removal.
            for _ in 0..3 {
                if fs::remove_dir_all(&s.dir).is_ok() || !s.dir.exists() {
                    break;
                }
                sleep(Duration::from_millis(100));
            }
        }
        eprintln!(
            "xtask: interrupted (signal {signal}); stopped {} throwaway server(s)",
            servers.len()
        );
        std::process::exit(128 + signal);
    });
    Ok(())
}

/// Whether the `openssl` command runs: the Redis TLS tests make their
/// certificate authority with it, and the throwaway databases their
/// certificates.
pub(crate) fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Throwaway {
    /// `redis-server` on a free port.
    pub(crate) fn redis(extra: &[&str]) -> Result<Self> {
        Self::redis_on(extra, free_port)
    }

    /// [`Throwaway::redis`], on the ports `pick` gives.
    fn redis_on(extra: &[&str], pick: impl FnMut() -> Result<u16>) -> Result<Self> {
        in_scratch_on(
            "redis",
            |dir, port| {
                let mut server = Command::new("redis-server");
                server
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(dir)
                    .args(extra);
                Ok(Prepared {
                    ready: Some("Ready to accept connections"),
                    ..Prepared::new(server)
                })
            },
            pick,
        )
    }

    /// A PostgreSQL cluster made by `initdb` on a free port, its superuser
    /// `postgres` trusted from loopback (database `postgres`), with TLS on
    /// under a self-signed certificate when `openssl` can make one.
    pub(crate) fn postgres() -> Result<Self> {
        let bin = postgres_bin().ok_or(
            "no initdb and postgres (PostgreSQL's server programs) on PATH or in /usr/lib/postgresql/*/bin",
        )?;
        // initdb and postgres refuse to run as root: as root, they run as
        // the system's `postgres` user, which must own their files.
        let user =
            if is_root() {
                Some(system_user("postgres").ok_or(
                    "running as root, and there is no `postgres` user to run PostgreSQL as",
                )?)
            } else {
                None
            };
        let as_user = |cmd: &mut Command| {
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
        };
        in_scratch("postgres", |dir, port| {
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot hand {} to postgres: {e}", dir.display()))?;
            }
            let data = dir.join("data");
            let mut initdb = Command::new(bin.join("initdb"));
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
            // Messages in English whatever the user's locale: readiness and
            // a taken port are read from the server's log.
            initdb.env("LC_ALL", "C");
            as_user(&mut initdb);
            run(&mut initdb, "initdb", dir).map_err(|e| match user {
                Some(_) => format!(
                    "{e} (as root, initdb runs as the postgres user, which must be able to reach {})",
                    dir.display()
                ),
                None => e,
            })?;
            let mut server = Command::new(bin.join("postgres"));
            server
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                // The tests run in parallel, each with a pool of its own.
                .args(["-c", "max_connections=200", "-c", "lc_messages=C"])
                .env("LC_ALL", "C");
            if let Some((cert, key)) = self_signed(dir, user)? {
                server
                    .args(["-c", "ssl=on", "-c"])
                    .arg(format!("ssl_cert_file={}", cert.display()))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", key.display()));
            }
            as_user(&mut server);
            Ok(Prepared {
                server,
                // A fast shutdown, which ends the backends too.
                stop: Some("-INT"),
                // It takes connections on its port before it serves them.
                ready: Some("database system is ready to accept connections"),
            })
        })
    }

    /// A MariaDB server made by `mariadb-install-db` on a free port, with
    /// `root` and an empty password from loopback and a database `test`,
    /// and TLS on under a self-signed certificate when `openssl` can make
    /// one.
    pub(crate) fn mariadb() -> Result<Self> {
        let server = ["mariadbd", "mysqld"]
            .into_iter()
            .find_map(|p| on_path(p).map(|d| d.join(p)))
            .or_else(|| {
                [
                    "/usr/sbin/mariadbd",
                    "/usr/libexec/mariadbd",
                    "/usr/sbin/mysqld",
                ]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
            })
            .ok_or("no mariadbd on PATH or in /usr/sbin or /usr/libexec")?;
        let install = ["mariadb-install-db", "mysql_install_db"]
            .into_iter()
            .find_map(|p| on_path(p).map(|d| d.join(p)))
            .ok_or("no mariadb-install-db on PATH")?;
        // mariadbd refuses to run as root unless told to.
        let user: &[&str] = if is_root() { &["--user=root"] } else { &[] };
        // A redo log of 8 MB instead of 96: a throwaway holds little.
        let sizes = ["--innodb-log-file-size=8M"];
        in_scratch("mariadb", |dir, port| {
            let datadir = format!("--datadir={}", dir.join("data").display());
            let mut setup = Command::new(&install);
            setup
                .arg("--no-defaults")
                .arg(&datadir)
                .args(user)
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .args(sizes);
            run(&mut setup, "mariadb-install-db", dir)?;
            let init = dir.join("init.sql");
            fs::write(&init, "CREATE DATABASE IF NOT EXISTS test;\n")
                .map_err(|e| format!("cannot write {}: {e}", init.display()))?;
            let mut server = Command::new(&server);
            server
                .arg("--no-defaults")
                .arg(&datadir)
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", dir.join("mariadb.sock").display()))
                .arg(format!("--pid-file={}", dir.join("mariadb.pid").display()))
                .arg(format!("--init-file={}", init.display()))
                .args(["--skip-log-bin", "--max-connections=300"])
                .args(user)
                .args(sizes);
            if let Some((cert, key)) = self_signed(dir, None)? {
                server
                    .arg(format!("--ssl-cert={}", cert.display()))
                    .arg(format!("--ssl-key={}", key.display()));
            }
            Ok(Prepared {
                ready: Some("ready for connections"),
                ..Prepared::new(server)
            })
        })
    }
}

/// A server's command, as the set-up of [`in_scratch`] prepares it.
struct Prepared {
    server: Command,
    /// See [`Throwaway::stop`].
    stop: Option<&'static str>,
    /// A line of the server's log that says it serves requests: a server
    /// may listen before it does, and until it says so, what answers on
    /// the port may be another process that took it first.
    ready: Option<&'static str>,
}

impl Prepared {
    fn new(server: Command) -> Self {
        Self {
            server,
            stop: None,
            ready: None,
        }
    }
}

/// How many ports a server is tried on: another process may take the port
/// between [`free_port`] finding it free and the server binding it.
const PORT_TRIES: usize = 3;

/// Makes a temporary directory for a server on a free port, has `setup`
/// prepare it and return the server's command, then starts the server and
/// waits until it answers; on a port taken meanwhile, all over again on
/// another. The directory goes if any step fails.
fn in_scratch(what: &str, setup: impl FnMut(&Path, u16) -> Result<Prepared>) -> Result<Throwaway> {
    in_scratch_on(what, setup, free_port)
}

/// [`in_scratch`], on the ports `pick` gives.
fn in_scratch_on(
    what: &str,
    mut setup: impl FnMut(&Path, u16) -> Result<Prepared>,
    mut pick: impl FnMut() -> Result<u16>,
) -> Result<Throwaway> {
    let mut tries = 0;
    loop {
        tries += 1;
        match start(what, pick()?, &mut setup) {
            Ok(server) => return Ok(server),
            Err(Start::PortTaken(e)) if tries < PORT_TRIES => {
                eprintln!("xtask: {e}; trying another port");
            }
            Err(Start::PortTaken(e) | Start::Failed(e)) => return Err(e),
        }
    }
}

/// Why [`start`] failed.
enum Start {
    /// The server exited because its port was taken.
    PortTaken(String),
    Failed(String),
}

impl From<String> for Start {
    fn from(e: String) -> Self {
        Self::Failed(e)
    }
}

/// One try of [`in_scratch`], on `port`.
fn start(
    what: &str,
    port: u16,
    setup: &mut impl FnMut(&Path, u16) -> Result<Prepared>,
) -> Result<Throwaway, Start> {
    // xtask's own tests start servers too (from here, before their set-up), in a test binary whose `main`
    // is libtest's: they need the handler as much as `cargo xtask` does.
    #[cfg(test)]
    {
        static HANDLER: std::sync::Once = std::sync::Once::new();
        HANDLER.call_once(|| {
            if let Err(e) = stop_on_signals() {
                eprintln!("xtask tests: {e}; an interrupted run may leave servers behind");
            }
        });
    }
    // Named by this process too: never another run's directory.
    let dir = env::temp_dir().join(format!(
        "session-xtask-{what}-{}-{port}",
        std::process::id()
    ));
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Known from now on: a Ctrl-C during the set-up (initdb takes seconds)
    // removes it too.
    running().push(Scratch {
        pid: None,
        stop: None,
        dir: dir.clone(),
    });
    let abandon = |dir: &Path| {
        running().retain(|s| s.dir != dir);
        let _ = fs::remove_dir_all(dir);
    };
    let prepared = match setup(&dir, port) {
        Ok(prepared) => prepared,
        Err(e) => {
            abandon(&dir);
            return Err(e.into());
        }
    };
    let Prepared {
        server: mut command,
        stop,
        ready,
    } = prepared;
    let log = dir.join("server.log");
    // Spawned and registered under the lock, which the signal handler keeps
    // once it has it: no server is started after it looked.
    let mut list = running();
    let spawned = fs::File::create(&log)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .and_then(|(out, err)| {
            command
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                // Out of the terminal's process group: a Ctrl-C reaches the
                // server through `stop_on_signals`, which also removes its
                // directory.
                .process_group(0)
                .spawn()
        });
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            drop(list);
            abandon(&dir);
            return Err(format!("cannot run {what}: {e}").into());
        }
    };
    if let Some(scratch) = list.iter_mut().find(|s| s.dir == dir) {
        scratch.pid = Some(child.id());
        scratch.stop = stop;
    }
    drop(list);
    let mut server = Throwaway {
        port,
        child,
        dir,
        stop,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Whatever answers, our server must still be running: another
        // process may have taken the port since it was picked.
        if let Ok(Some(status)) = server.child.try_wait() {
            let e = format!("{what} exited ({status}): {}", tail(&log));
            let taken =
                fs::read_to_string(&log).is_ok_and(|t| t.contains("Address already in use"));
            return Err(if taken {
                Start::PortTaken(e)
            } else {
                Start::Failed(e)
            });
        }
        let serving =
            ready.is_none_or(|line| fs::read_to_string(&log).is_ok_and(|text| text.contains(line)));
        if serving && answers(&format!("127.0.0.1:{port}")) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer within 30 s: {}", tail(&log)).into());
        }
        sleep(Duration::from_millis(50));
    }
}

/// Runs a set-up command in `dir` to its end, for at most a minute; its
/// output (in `dir`) is shown only if it fails.
fn run(command: &mut Command, what: &str, dir: &Path) -> Result {
    let log = dir.join(format!("{what}.log"));
    let out =
        fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within 60 s: {}", tail(&log)));
            }
            None => sleep(Duration::from_millis(20)),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status}): {}", tail(&log)))
    }
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A loopback port that is free, and whose cluster bus port (+10000) is too.
pub(crate) fn free_port() -> Result<u16> {
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

/// The directory on `PATH` that holds `program`.
fn on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).find(|dir| dir.join(program).is_file())
}

/// The directory of PostgreSQL's server programs: on `PATH`, or the newest
/// major version's under `/usr/lib/postgresql` (Debian and Ubuntu keep them
/// off `PATH`).
fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = on_path("initdb").filter(|dir| dir.join("postgres").is_file()) {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A number that `id` prints (`id -u`, `id -g postgres`, ...).
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten()
}

fn is_root() -> bool {
    id(&["-u"]) == Some(0)
}

/// The uid and gid of a system user.
fn system_user(name: &str) -> Option<(u32, u32)> {
    Some((id(&["-u", name])?, id(&["-g", name])?))
}

/// A self-signed certificate for `localhost` and its key, made by
/// `openssl` in `dir` and owned by `owner`; `None` without `openssl`.
fn self_signed(dir: &Path, owner: Option<(u32, u32)>) -> Result<Option<(PathBuf, PathBuf)>> {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let mut openssl = Command::new("openssl");
    openssl
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    match run(&mut openssl, "openssl", dir) {
        Ok(()) => {}
        Err(_) if !openssl_available() => return Ok(None),
        Err(e) => return Err(e),
    }
    // PostgreSQL refuses a key that others can read.
    let fixed =
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).and_then(|()| match owner {
            Some((uid, gid)) => [&cert, &key]
                .into_iter()
                .try_for_each(|f| std::os::unix::fs::chown(f, Some(uid), Some(gid))),
            None => Ok(()),
        });
    fixed.map_err(|e| format!("cannot prepare the certificate's files: {e}"))?;
    Ok(Some((cert, key)))
}

/// Starts three cluster-enabled servers and joins them into a cluster of
/// three masters; returns `REDIS_CLUSTER_URLS` and the processes.
pub(crate) fn redis_cluster() -> Result<(String, Vec<Throwaway>)> {
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
    // `--cluster create` waits for ever for nodes that cannot meet.
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]).args(&addrs).args([
        "--cluster-replicas",
        "0",
        "--cluster-yes",
    ]);
    run(&mut create, "redis-cli", &nodes[0].dir)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = nodes.iter().all(|node| {
            let mut info = Command::new("redis-cli");
            info.args(["-p", &node.port.to_string(), "cluster", "info"]);
            run(&mut info, "redis-cli", &node.dir).is_ok()
                && fs::read_to_string(node.dir.join("redis-cli.log"))
                    .is_ok_and(|text| text.contains("cluster_state:ok"))
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

/// Prints `NAME=value` for a running throwaway and keeps it up until Enter.
pub(crate) fn foreground(name: &str, value: &str, servers: Vec<Throwaway>) -> Result {
    println!("{name}={value}");
    eprintln!("xtask: running; press Enter to stop it");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// A server that cannot be started: a failure in CI, a loud skip
    /// elsewhere.
    fn unavailable(what: &str, why: &str) {
        assert!(
            env::var("CI").map_or(true, |v| v != "true"),
            "CI needs a throwaway {what}: {why}"
        );
        eprintln!("SKIPPED: a throwaway {what} ({why})");
        // Recorded for `cargo xtask test`'s list, as the store tests' skips are.
        if let Some(path) = env::var_os(crate::SKIPS_FILE_VAR) {
            let line = format!(
                "xtask's throwaway {what} test ({})\n",
                why.replace('\n', " ")
            );
            let _ = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
    }

    fn connect(port: u16) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        stream
    }

    /// Stops `server` and checks that its port and directory are gone.
    fn leaves_nothing_behind(server: Throwaway) {
        let (port, dir) = (server.port, server.dir.clone());
        drop(server);
        assert!(!dir.exists(), "{} is left behind", dir.display());
        assert!(!answers(&format!("127.0.0.1:{port}")), "still answers");
    }

    /// A port another listener holds for the test's length.
    fn taken_port() -> (std::net::TcpListener, u16) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("its address").port();
        (listener, port)
    }

    #[test]
    fn a_throwaway_whose_port_was_taken_starts_on_another() {
        let (_listener, taken) = taken_port();
        let mut ports = vec![Ok(taken), free_port()].into_iter();
        let server = match Throwaway::redis_on(&[], || ports.next().expect("a third port")) {
            Ok(server) => server,
            Err(e) if e.contains("cannot run") => return unavailable("Redis", &e),
            Err(e) => panic!("{e}"),
        };
        assert_ne!(server.port, taken);
        // Our server answers, not the listener that holds the taken port
        // (which never would).
        let mut stream = connect(server.port);
        stream.write_all(b"PING\r\n").expect("write");
        let mut answer = [0u8; 7];
        stream.read_exact(&mut answer).expect("read");
        assert_eq!(&answer, b"+PONG\r\n");
        drop(stream);
        leaves_nothing_behind(server);
    }

    #[test]
    fn a_throwaway_gives_up_after_its_tries_and_leaves_nothing_behind() {
        let (_listener, taken) = taken_port();
        let mut tries = 0;
        let failed = Throwaway::redis_on(&[], || {
            tries += 1;
            Ok(taken)
        });
        let e = match failed {
            Ok(_) => panic!("a server started on a taken port"),
            Err(e) if e.contains("cannot run") => return unavailable("Redis", &e),
            Err(e) => e,
        };
        assert!(e.contains("Address already in use"), "{e}");
        assert_eq!(tries, PORT_TRIES);
        let prefix = format!("session-xtask-redis-{}-{taken}", std::process::id());
        let left = fs::read_dir(env::temp_dir())
            .expect("the temporary directory")
            .filter_map(|entry| entry.ok())
            .any(|entry| entry.file_name().to_string_lossy() == prefix);
        assert!(!left, "{prefix} is left behind");
    }

    #[test]
    fn a_throwaway_postgres_takes_tls_and_leaves_nothing_behind() {
        let server = match Throwaway::postgres() {
            Ok(server) => server,
            Err(e) => return unavailable("PostgreSQL", &e),
        };
        // The protocol's SSLRequest (length 8, code 80877103): a server with
        // ssl = on answers `S`, one without `N`.
        let mut stream = connect(server.port);
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .expect("write");
        let mut answer = [0u8];
        stream.read_exact(&mut answer).expect("read");
        if openssl_available() {
            assert_eq!(answer[0], b'S', "the answer to SSLRequest");
        } else {
            assert!(matches!(answer[0], b'S' | b'N'), "the answer to SSLRequest");
        }
        drop(stream);
        leaves_nothing_behind(server);
    }

    #[test]
    fn a_throwaway_mariadb_offers_tls_and_leaves_nothing_behind() {
        let server = match Throwaway::mariadb() {
            Ok(server) => server,
            Err(e) => return unavailable("MariaDB", &e),
        };
        // The server speaks first: a packet (3 bytes of length, 1 of
        // sequence) holding protocol version 10, the server's version
        // (`...-MariaDB...`, NUL-terminated), a thread id (4 bytes), 8 bytes
        // of scramble and a filler, then the capability flags' low half,
        // where CLIENT_SSL (0x0800) says whether it takes TLS.
        let mut stream = connect(server.port);
        let mut head = [0u8; 4];
        stream
            .read_exact(&mut head)
            .expect("read the packet header");
        let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
        let mut packet = vec![0u8; len];
        stream.read_exact(&mut packet).expect("read the handshake");
        assert_eq!(packet[0], 10, "protocol version");
        let nul = packet.iter().position(|&b| b == 0).expect("version's end");
        let version = String::from_utf8_lossy(&packet[1..nul]);
        assert!(version.contains("MariaDB"), "{version}");
        let flags = u16::from_le_bytes([packet[nul + 14], packet[nul + 15]]);
        if openssl_available() {
            assert_ne!(flags & 0x0800, 0, "no CLIENT_SSL in {flags:#06x}");
        }
        drop(stream);
        leaves_nothing_behind(server);
    }
}
