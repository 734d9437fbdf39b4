//! Throwaway servers for a test run where the machine's own do not answer:
//! Redis, a Redis Cluster, PostgreSQL and MariaDB, each started from the
//! installed binaries on a free loopback port with its files in a temporary
//! directory, and stopped (the directory removed) when dropped.

use std::env;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

impl Drop for Throwaway {
    fn drop(&mut self) {
        if let Some(signal) = self.stop {
            let _ = Command::new("kill")
                .args([signal, &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Throwaway {
    /// `redis-server` on a free port.
    pub(crate) fn redis(extra: &[&str]) -> Result<Self> {
        in_scratch("redis", |dir, port| {
            let mut server = Command::new("redis-server");
            server
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .args(extra);
            Ok((server, None))
        })
    }

    /// A PostgreSQL cluster made by `initdb` on a free port, its superuser
    /// `postgres` trusted from loopback (database `postgres`), with TLS on
    /// under a self-signed certificate when `openssl` can make one.
    pub(crate) fn postgres() -> Result<Self> {
        let bin = postgres_bin().ok_or("no initdb on PATH or in /usr/lib/postgresql/*/bin")?;
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
            as_user(&mut initdb);
            run(initdb.current_dir(dir), "initdb")?;
            let mut server = Command::new(bin.join("postgres"));
            server
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir)
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                // The tests run in parallel, each with a pool of its own.
                .args(["-c", "max_connections=200"]);
            if let Some((cert, key)) = self_signed(dir, user)? {
                server
                    .args(["-c", "ssl=on", "-c"])
                    .arg(format!("ssl_cert_file={}", cert.display()))
                    .arg("-c")
                    .arg(format!("ssl_key_file={}", key.display()));
            }
            as_user(&mut server);
            // SIGINT: a fast shutdown, which ends the backends too.
            Ok((server, Some("-INT")))
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
            .ok_or("no mariadbd on PATH or in /usr/sbin")?;
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
            let mut setup = Command::new(install);
            setup
                .arg("--no-defaults")
                .arg(&datadir)
                .args(user)
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .args(sizes);
            run(setup.current_dir(dir), "mariadb-install-db")?;
            let init = dir.join("init.sql");
            fs::write(&init, "CREATE DATABASE IF NOT EXISTS test;\n")
                .map_err(|e| format!("cannot write {}: {e}", init.display()))?;
            let mut server = Command::new(server);
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
            Ok((server, None))
        })
    }
}

/// Makes a temporary directory for a server on a free port, has `setup`
/// prepare it and return the server's command, then starts the server and
/// waits until it answers. The directory goes if any step fails.
fn in_scratch(
    what: &str,
    setup: impl FnOnce(&Path, u16) -> Result<(Command, Option<&'static str>)>,
) -> Result<Throwaway> {
    let port = free_port()?;
    let dir = env::temp_dir().join(format!("session-xtask-{what}-{port}"));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (mut command, stop) = match setup(&dir, port) {
        Ok(prepared) => prepared,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let log = dir.join("server.log");
    let spawned = fs::File::create(&log)
        .and_then(|out| Ok((out.try_clone()?, out)))
        .and_then(|(out, err)| {
            command
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
        });
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(format!("cannot run {what}: {e}"));
        }
    };
    let mut server = Throwaway {
        port,
        child,
        dir,
        stop,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers(&format!("127.0.0.1:{port}")) {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("{what} exited ({status}): {}", tail(&log)));
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer within 30 s: {}", tail(&log)));
        }
        sleep(Duration::from_millis(50));
    }
    Ok(server)
}

/// Runs a set-up command to its end; its output is shown only if it fails.
fn run(command: &mut Command, what: &str) -> Result {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The last lines of a server's log, for an error message.
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
    if let Some(dir) = on_path("initdb") {
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
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        return Ok(None);
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
    }

    /// Whether `openssl` can make the throwaways' certificates.
    fn openssl() -> bool {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Stops `server` and checks that its port and directory are gone.
    fn leaves_nothing_behind(server: Throwaway) {
        let (port, dir) = (server.port, server.dir.clone());
        drop(server);
        assert!(!dir.exists(), "{} is left behind", dir.display());
        assert!(!answers(&format!("127.0.0.1:{port}")), "still answers");
    }

    #[test]
    fn a_throwaway_postgres_takes_tls_and_leaves_nothing_behind() {
        let server = match Throwaway::postgres() {
            Ok(server) => server,
            Err(e) => return unavailable("PostgreSQL", &e),
        };
        // The protocol's SSLRequest (length 8, code 80877103): a server with
        // ssl = on answers `S`, one without `N`.
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream
            .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .expect("write");
        let mut answer = [0u8];
        stream.read_exact(&mut answer).expect("read");
        let expected = if openssl() { b'S' } else { b'N' };
        assert_eq!(answer[0], expected, "the answer to SSLRequest");
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
        let mut stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
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
        assert_eq!(flags & 0x0800 != 0, openssl(), "CLIENT_SSL in {flags:#06x}");
        drop(stream);
        leaves_nothing_behind(server);
    }
}
