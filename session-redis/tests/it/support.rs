//! Connecting to the test servers, isolating each test, cleaning up.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use session_core::testing::WithCleanup;
use session_redis::RedisStore;

/// Reports a missing server: a panic in CI, a loud skip elsewhere.
pub(crate) fn missing(what: &str, why: &str) {
    session_core::testing::skip(&format!(
        "{what} is not available ({why}); install redis-server (apt-get install redis-server) or point the variable at a server"
    ));
}

pub(crate) fn unique_prefix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("random");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("test-{hex}:")
}

/// A store under a unique prefix whose keys are deleted when it is dropped.
pub(crate) type Scoped = WithCleanup<RedisStore>;

/// Deletes every key under `prefix`, from a thread of its own (drop may run
/// inside the async runtime).
pub(crate) fn delete_prefix(url: String, prefix: String) {
    let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
        let mut conn = redis::Client::open(url.as_str())?.get_connection()?;
        // `SCAN`, not `KEYS`, which would hold a large shared Redis while it
        // walked every key.
        let keys: Vec<String> = redis::Commands::scan_options(
            &mut conn,
            redis::ScanOptions::default()
                .with_pattern(format!("{prefix}*"))
                .with_count(1000),
        )?
        .collect::<Result<_, _>>()?;
        for chunk in keys.chunks(500) {
            redis::cmd("DEL").arg(chunk).query::<()>(&mut conn)?;
        }
        Ok(())
    })
    .join();
}

pub(crate) async fn standalone() -> Option<Scoped> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match tokio::time::timeout(Duration::from_secs(5), RedisStore::connect(&url)).await {
        Ok(Ok(store)) => {
            let prefix = unique_prefix();
            let store = store.with_prefix(prefix.clone());
            Some(WithCleanup::new(store, move || delete_prefix(url, prefix)))
        }
        Ok(Err(e)) => {
            missing(&format!("Redis at {url} (REDIS_URL)"), &e.to_string());
            None
        }
        Err(_) => {
            missing(
                &format!("Redis at {url} (REDIS_URL)"),
                "connection timed out",
            );
            None
        }
    }
}

/// Two stores over one server and key prefix, connected separately (two app
/// servers): the first deletes the prefix's keys when dropped.
pub(crate) async fn standalone_pair() -> Option<(Scoped, RedisStore)> {
    let a = standalone().await?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let b = RedisStore::connect(&url)
        .await
        .expect("a second connection to the server the first reached")
        .with_prefix(a.inner().prefix().to_owned());
    Some((a, b))
}

/// As [`standalone_pair`], on the Cluster.
pub(crate) async fn cluster_pair() -> Option<(Scoped, RedisStore)> {
    let a = cluster().await?;
    let urls = std::env::var("REDIS_CLUSTER_URLS").expect("set, as the first store connected");
    let nodes: Vec<String> = urls.split(',').map(|s| s.trim().to_owned()).collect();
    let b = RedisStore::connect_cluster(nodes)
        .await
        .expect("a second connection to the cluster the first reached")
        .with_prefix(a.inner().prefix().to_owned());
    Some((a, b))
}

pub(crate) async fn cluster() -> Option<Scoped> {
    let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") else {
        missing(
            "a Redis Cluster (REDIS_CLUSTER_URLS)",
            "not set; `cargo xtask test` starts one, or run `cargo xtask redis-cluster`",
        );
        return None;
    };
    let nodes: Vec<String> = urls.split(',').map(|s| s.trim().to_owned()).collect();
    match tokio::time::timeout(Duration::from_secs(10), RedisStore::connect_cluster(nodes)).await {
        // The cluster is a throwaway one; its keys also expire by themselves.
        Ok(Ok(store)) => Some(WithCleanup::new(store.with_prefix(unique_prefix()), || {})),
        Ok(Err(e)) => {
            missing(&format!("the Redis Cluster at {urls}"), &e.to_string());
            None
        }
        Err(_) => {
            missing(
                &format!("the Redis Cluster at {urls}"),
                "connection timed out",
            );
            None
        }
    }
}

/// A loopback port that is free now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits up to 10 s for `child` to listen on `port`; `Err` with `log()`
/// when it exits first or never listens.
pub(crate) fn wait_until_listening(
    port: u16,
    child: &mut Child,
    log: impl Fn() -> String,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited ({status}): {}", log()));
        }
        if Instant::now() > deadline {
            return Err(format!("redis-server did not start listening: {}", log()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A `redis-server` of the test's own on a free port, stopped on drop.
pub(crate) struct Throwaway {
    pub(crate) port: u16,
    child: Option<Child>,
    /// More `redis-server` arguments (`--requirepass`, say).
    extra: Vec<String>,
}

impl Throwaway {
    /// Starts one; `None` (reported) when `redis-server` is not installed.
    pub(crate) fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts one with more `redis-server` arguments.
    pub(crate) fn start_with(extra: &[&str]) -> Option<Self> {
        let mut server = Self {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(e) => {
                missing("redis-server (for the fault tests)", &e);
                None
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir", "/tmp"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let child = self.child.insert(child);
        wait_until_listening(self.port, child, String::new)
    }

    /// Stops the server (as a crash would).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub(crate) fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart redis-server");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }

    /// Freezes the server: connections stay open, nothing answers.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes it.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
