//! `rediss://` through the `tls-rustls` feature, against a throwaway
//! `redis-server` that speaks only TLS, under a certificate authority the
//! test makes with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// A TLS-only `redis-server` with its certificates; stopped and removed on
/// drop.
struct TlsRedis {
    port: u16,
    child: Child,
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
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
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
    /// Starts one; `None` (reported) without `openssl` or a `redis-server`
    /// built with TLS.
    fn start() -> Option<Self> {
        match Self::try_start() {
            Ok(server) => Some(server),
            Err(e) => {
                missing(
                    "a TLS redis-server and the openssl command (apt-get install openssl)",
                    &e,
                );
                None
            }
        }
    }

    fn try_start() -> Result<Self, String> {
        let port = free_port();
        let dir = TempDir(
            std::env::temp_dir().join(format!("session-redis-tls-{}-{port}", std::process::id())),
        );
        std::fs::create_dir_all(&dir.0).map_err(|e| e.to_string())?;
        make_certificates(&dir.0)?;
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
            .args(["--logfile", "redis.log"])
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        // From here on, drop stops the server, whatever fails next.
        let mut server = Self { port, child, dir };
        let log = server.dir.0.join("redis.log");
        let log = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        wait_until_listening(port, &mut server.child, log)?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A client that trusts the test's certificate authority.
    fn trusting_client(&self) -> Client {
        let ca = std::fs::read(self.dir.0.join("ca.pem")).expect("read ca.pem");
        Client::build_with_tls(
            self.url(),
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            },
        )
        .expect("a TLS client")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_over_tls_with_the_servers_authority_trusted() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    let store = RedisStore::connect_client(server.trusting_client())
        .await
        .expect("a TLS connection to a server whose authority the client trusts");
    let m = Manager::new(store, Config::default());
    // Create, load, save (an increment) and delete, each over TLS.
    let cookie = stored_session(&m).await;
    assert_eq!(read_name(&m, &cookie).await.expect("load"), "iris");
    let s = m.session_from_cookies([cookie.as_str()]);
    assert_eq!(s.increment("visits", 1).await.expect("save"), 1);
    assert_eq!(s.increment("visits", 1).await.expect("save"), 2);
    s.destroy().await.expect("delete");
    s.commit().await.expect("commit");
    assert_eq!(read_name(&m, &cookie).await.expect("load"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_no_trusted_root_vouches_for_is_refused() {
    let Some(server) = TlsRedis::start() else {
        return;
    };
    // The system's roots do not include the test's own authority.
    let err = RedisStore::connect(&server.url())
        .await
        .expect_err("an unknown authority must fail the handshake");
    let RedisStoreError::Connect(source) = &err else {
        panic!("not a connection error: {err}");
    };
    let cause = source.to_string().to_lowercase();
    assert!(cause.contains("certificate"), "{cause}");
    // Nor does the TLS port answer a plain connection.
    let plain = format!("redis://127.0.0.1:{}", server.port);
    let err = RedisStore::connect(&plain)
        .await
        .expect_err("a plain connection to a TLS port must fail");
    assert!(matches!(err, RedisStoreError::Connect(_)), "{err}");
}
