//! `rediss://` through the `tls-rustls` feature, against throwaway
//! `redis-server`s that speak only TLS (one server, and a Cluster of three
//! whose bus is TLS too), under a certificate authority the test makes with
//! the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::{Client, TlsCertificates};
use session_core::testing::{read_name, stored_session};
use session_core::{Config, Manager};
use session_redis::{RedisStore, RedisStoreError};

use crate::support::{free_port, missing, wait_until_listening};

/// A directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// TLS-only `redis-server`s (one, or the three masters of a Cluster) with
/// their certificates; stopped and removed on drop.
struct TlsRedis {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A certificate authority (`ca.pem`) and a server certificate it signed
/// for 127.0.0.1 (`server.pem`, `server.key`).
fn make_certificates(dir: &Path) -> Result<(), String> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=session-redis test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req", "-nodes", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr)?;
    std::fs::write(
        dir.join("server.ext"),
        // clientAuth too: a Cluster's nodes present it to each other on
        // their bus, which always checks the peer's certificate.
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    )
}

impl TlsRedis {
    /// Starts one server; `None` (reported) without `openssl` or a
    /// `redis-server` built with TLS.
    fn start() -> Option<Self> {
        Self::reported(Self::try_start(1))
    }

    /// Starts three cluster-enabled servers and joins them into a Cluster of
    /// three masters; `None` (reported) as for [`start`](Self::start).
    fn start_cluster() -> Option<Self> {
        Self::reported(Self::try_start(3).and_then(|servers| {
            servers.create_cluster()?;
            Ok(servers)
        }))
    }

    fn reported(started: Result<Self, String>) -> Option<Self> {
        match started {
            Ok(servers) => Some(servers),
            Err(e) => {
                missing(
                    "a TLS redis-server, redis-cli and the openssl command (apt-get install redis-server redis-tools openssl)",
                    &e,
                );
                None
            }
        }
    }

    /// `count` servers; more than one makes them cluster-enabled, with the
    /// cluster bus on TLS too.
    fn try_start(count: usize) -> Result<Self, String> {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "session-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        )));
        std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
        make_certificates(&dir.0)?;
        // From here on, drop stops the servers, whatever fails next.
        let mut servers = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        let cluster: &[&str] = if count > 1 {
            &["--cluster-enabled", "yes", "--tls-cluster", "yes"]
        } else {
            &[]
        };
        for _ in 0..count {
            let port = free_port_with_bus();
            let child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args([
                    "--tls-cert-file",
                    "server.pem",
                    "--tls-key-file",
                    "server.key",
                ])
                .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
                .args(cluster)
                .arg("--cluster-config-file")
                .arg(format!("nodes-{port}.conf"))
                .arg("--logfile")
                .arg(format!("redis-{port}.log"))
                .current_dir(&servers.dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run redis-server: {e}"))?;
            servers.ports.push(port);
            servers.children.push(child);
            let log = servers.dir.0.join(format!("redis-{port}.log"));
            let log = || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            let child = servers.children.last_mut().expect("just pushed");
            wait_until_listening(port, child, log)?;
        }
        Ok(servers)
    }

    /// `redis-cli` over TLS, trusting the test's authority; stopped after
    /// 30 s (`--cluster create` waits for ever for nodes that cannot meet).
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut child = Command::new("redis-cli")
            .args(["--tls", "--cacert", "ca.pem"])
            .args(args)
            .current_dir(&self.dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run redis-cli: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "redis-cli {args:?} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn create_cluster(&self) -> Result<(), String> {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        self.cli(&args)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ports.iter().all(|p| {
            self.cli(&["-p", &p.to_string(), "cluster", "info"])
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        }) {
            if Instant::now() > deadline {
                return Err("the TLS cluster did not reach cluster_state:ok".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The `rediss://` URL of each server.
    fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
            .collect()
    }

    fn url(&self) -> String {
        self.urls().swap_remove(0)
    }

    /// The test's authority, as a client's trusted root.
    fn certificates(&self) -> TlsCertificates {
        let ca = std::fs::read(self.dir.0.join("ca.pem")).expect("read ca.pem");
        TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        }
    }

    /// A client that trusts the test's certificate authority.
    fn trusting_client(&self) -> Client {
        Client::build_with_tls(self.url(), self.certificates()).expect("a TLS client")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn free_port_with_bus() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Creates, loads, saves (two increments) and deletes a session through `m`.
async fn round_trip(m: &Manager) {
    let cookie = stored_session(m).await;
    assert_eq!(read_name(m, &cookie).await.expect("load"), "iris");
    let s = m.session_from_cookies([cookie.as_str()]);
    assert_eq!(s.increment("visits", 1).await.expect("save"), 1);
    assert_eq!(s.increment("visits", 1).await.expect("save"), 2);
    s.destroy().await.expect("delete");
    s.commit().await.expect("commit");
    assert_eq!(read_name(m, &cookie).await.expect("load"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_over_tls_with_the_servers_authority_trusted() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    let store = RedisStore::connect_client(server.trusting_client())
        .await
        .expect("a TLS connection to a server whose authority the client trusts");
    // Create, load, save (an increment) and delete, each over TLS.
    round_trip(&Manager::new(store, Config::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_works_over_tls_with_the_servers_authority_trusted() {
    let Some(cluster) = TlsRedis::start_cluster() else {
        return;
    };
    let builder = ClusterClient::builder(cluster.urls()).certs(cluster.certificates());
    let store = RedisStore::connect_cluster_builder(builder)
        .await
        .expect("a TLS connection to a cluster whose authority the client trusts");
    let m = Manager::new(store, Config::default());
    // Sessions spread over the three masters' slots: thirty of them leave
    // each master at least one, but for a chance of about 1 in 60 000.
    let mut cookies = Vec::new();
    for _ in 0..30 {
        cookies.push(stored_session(&m).await);
    }
    for port in &cluster.ports {
        let keys = cluster
            .cli(&["-p", &port.to_string(), "dbsize"])
            .expect("dbsize");
        let keys: u64 = keys.trim().parse().expect("DBSIZE answers a number");
        assert!(keys > 0, "no session on the master at {port}");
    }
    for cookie in &cookies {
        let s = m.session_from_cookies([cookie.as_str()]);
        assert_eq!(s.increment("visits", 1).await.expect("save"), 1);
        s.destroy().await.expect("delete");
        s.commit().await.expect("commit");
        assert_eq!(read_name(&m, cookie).await.expect("load"), "");
    }
    round_trip(&m).await;
    // The system's roots do not include the test's own authority.
    refused_for_its_certificate(RedisStore::connect_cluster(cluster.urls()).await);
}

/// A connection refused because no trusted root vouches for the server.
fn refused_for_its_certificate(connected: Result<RedisStore, RedisStoreError>) {
    let err = connected.expect_err("an unknown authority must fail the handshake");
    let RedisStoreError::Connect(source) = &err else {
        panic!("not a connection error: {err}");
    };
    let cause = source.to_string().to_lowercase();
    assert!(cause.contains("certificate"), "{cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_no_trusted_root_vouches_for_is_refused() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    // The system's roots do not include the test's own authority.
    refused_for_its_certificate(RedisStore::connect(&server.url()).await);
    // Nor does the TLS port answer a plain connection.
    let plain = format!("redis://127.0.0.1:{}", server.ports[0]);
    let err = RedisStore::connect(&plain)
        .await
        .expect_err("a plain connection to a TLS port must fail");
    assert!(matches!(err, RedisStoreError::Connect(_)), "{err}");
}
