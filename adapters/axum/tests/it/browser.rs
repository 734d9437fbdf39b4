//! The demo's `/app` page in a real headless Chromium, driven through
//! chromedriver: log in, a counter that survives reloads, an `HttpOnly`
//! cookie that page scripts cannot see, a second browser ending the first
//! one's session from its list of sessions, and "log out everywhere".
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them);
//! without them the test says SKIPPED, except in CI where that is a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use session_core::{Config, Manager};
use session_memory::MemoryStore;

struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    /// Stops chromedriver and every browser process it started: killed
    /// alone, chromedriver left a test that failed midway with a headless
    /// Chromium running on. (They stay in the test's process group, so that
    /// a Ctrl-C in the terminal still reaches them all.)
    fn drop(&mut self) {
        for pid in descendants(self.child.id()) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes descended from `root`, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`, where comm may hold anything.
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn chromedriver() -> Option<Driver> {
    let missing = |why: &str| {
        session_core::testing::skip(&format!(
            "browser test ({why}; install: apt-get install chromium chromium-driver)"
        ));
        None
    };
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return missing("no /usr/bin/chromium");
    }
    let port = free_port();
    let child = match Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return missing(&format!("cannot run chromedriver: {e}")),
    };
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return missing("chromedriver did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(driver)
}

/// A fresh browser: chromedriver gives each session its own empty profile,
/// so two browsers share no cookies.
async fn browser(driver: &Driver) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("an object literal")
    };
    // chromedriver has been seen to drop the connection of the first new
    // session on a machine where Chromium had never run (its first start
    // builds caches): a dropped connection is tried again, a few times.
    let mut tries = 0;
    loop {
        tries += 1;
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(
                fantoccini::error::NewSessionError::Lost(_)
                | fantoccini::error::NewSessionError::FailedC(_),
            ) if tries < 4 => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("a chromium session: {e:?}"),
        }
    }
}

async fn text(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id))
        .await
        .expect(id)
        .text()
        .await
        .expect("text")
}

/// Waits until the element's text is `want` (pages reload after each action).
async fn wait_text(c: &Client, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = c.find(Locator::Id(id)).await {
            if e.text().await.is_ok_and(|t| t == want) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "#{id} never became {want:?}; page: {:?}",
            c.source().await.ok()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .expect(id)
        .click()
        .await
        .expect("click");
}

async fn log_in(c: &Client, base: &str, user: &str) {
    c.goto(&format!("{base}/app")).await.expect("open /app");
    c.find(Locator::Id("name"))
        .await
        .expect("name")
        .send_keys(user)
        .await
        .expect("type");
    click(c, "login-button").await;
    wait_text(c, "user", user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_logs_in_counts_and_is_logged_out_everywhere() {
    let Some(driver) = chromedriver() else { return };
    // The default, secure configuration: Chromium keeps Secure cookies on
    // http://localhost.
    let manager = Manager::new(MemoryStore::new(), Config::default());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(session_demo::axum::serve(listener, manager));
    let base = format!("http://localhost:{port}");

    let a = browser(&driver).await;
    a.goto(&format!("{base}/app")).await.expect("open /app");
    assert_eq!(text(&a, "user").await, "Not logged in");
    log_in(&a, &base, "carol").await;
    // The login's flash shows once.
    assert_eq!(text(&a, "notice").await, "Welcome, carol.");
    for n in 1..=3 {
        click(&a, "incr").await;
        wait_text(&a, "count", &n.to_string()).await;
    }
    a.refresh().await.expect("reload");
    wait_text(&a, "count", "3").await;
    wait_text(&a, "user", "carol").await;
    assert!(
        a.find(Locator::Id("notice")).await.is_err(),
        "the flash showed twice"
    );

    // The cookie exists, is HttpOnly, and the page's script cannot see it.
    let cookies = a.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(text(&a, "visible-cookies").await, "\"\"");
    let seen = a
        .execute("return document.cookie", vec![])
        .await
        .expect("script");
    assert!(
        !seen.as_str().unwrap_or_default().contains("session"),
        "{seen}"
    );

    // A second browser logs in as the same user: its page lists both
    // sessions and ends the first browser's.
    let b = browser(&driver).await;
    log_in(&b, &base, "carol").await;
    wait_text(&b, "session-count", "2").await;
    b.find(Locator::Css("#sessions li:not(.this) button"))
        .await
        .expect("the other session's End button")
        .click()
        .await
        .expect("click");
    wait_text(&b, "session-count", "1").await;
    a.refresh().await.expect("reload");
    wait_text(&a, "user", "Not logged in").await;

    // The first browser logs in again and counts, logs out (the counter
    // stays: a logout keeps the session's values), then ends the session
    // (the counter goes).
    log_in(&a, &base, "carol").await;
    click(&a, "incr").await;
    wait_text(&a, "count", "1").await;
    click(&a, "logout").await;
    wait_text(&a, "user", "Not logged in").await;
    wait_text(&a, "count", "1").await;
    click(&a, "destroy").await;
    wait_text(&a, "count", "0").await;

    // Logged in and counting again; the second browser logs out
    // everywhere.
    log_in(&a, &base, "carol").await;
    click(&a, "incr").await;
    wait_text(&a, "count", "1").await;
    click(&b, "logout-all").await;
    wait_text(&b, "user", "Not logged in").await;
    a.refresh().await.expect("reload");
    wait_text(&a, "user", "Not logged in").await;
    wait_text(&a, "count", "0").await;

    a.close().await.expect("close a");
    b.close().await.expect("close b");
}

/// A test that fails with its browser open leaves no Chromium running:
/// dropping the driver stops the browser processes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_driver_stops_its_open_browsers() {
    let Some(driver) = chromedriver() else { return };
    let open = browser(&driver).await;
    let started = descendants(driver.child.id());
    assert!(!started.is_empty(), "chromedriver started no browser");
    drop(driver);
    let deadline = Instant::now() + Duration::from_secs(5);
    let running = || {
        started
            .iter()
            .filter(|pid| {
                // Gone, or a zombie waiting for init to reap it.
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
                        Some(state != "Z")
                    })
                    .unwrap_or(false)
            })
            .count()
    };
    while running() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(running(), 0, "browser processes outlived the driver");
    drop(open);
}
