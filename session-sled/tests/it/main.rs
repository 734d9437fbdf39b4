//! session-sled: the conformance suite on a fresh database per test, and
//! sessions surviving a crash of the process that wrote them.

use std::path::PathBuf;
use std::process::Command;

use session_core::{Config, Manager, SetCookie};
use session_sled::{FlushPolicy, SledStore};

fn temp_path() -> PathBuf {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).expect("random");
    let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
    std::env::temp_dir().join(format!("session-sled-test-{name}"))
}

mod conformance {
    session_core::store_conformance!(async {
        session_sled::SledStore::builder(super::temp_path())
            .temporary(true)
            .open()
            .expect("open sled")
    });
}

/// The suite again under `EveryWrite`, whose single-record calls run on
/// Tokio's blocking pool.
mod conformance_every_write {
    session_core::store_conformance!(async {
        session_sled::SledStore::builder(super::temp_path())
            .temporary(true)
            .flush(session_sled::FlushPolicy::EveryWrite)
            .open()
            .expect("open sled")
    });
}

const CHILD_ENV: &str = "SESSION_SLED_CRASH_WRITER";

/// Run in a child process: writes sessions with `EveryWrite`, prints their
/// cookies, then dies without any clean shutdown.
#[tokio::test]
async fn crash_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful as the child of the test below.
    };
    let store = SledStore::builder(&path)
        .flush(FlushPolicy::EveryWrite)
        .open()
        .expect("open");
    let manager = Manager::new(store, Config::default());
    for i in 0..20 {
        let s = manager.session_from_cookies(None::<&str>);
        s.insert("n", &i).await.expect("insert");
        match s.commit().await.expect("commit") {
            SetCookie::Set { value, .. } => println!("COOKIE {i} {value}"),
            other => panic!("{other:?}"),
        }
    }
    std::process::abort();
}

#[tokio::test]
async fn acknowledged_sessions_survive_a_crash_and_a_reopen() {
    let path = temp_path();
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &path)
        .output()
        .expect("run the writer");
    assert!(
        !out.status.success(),
        "the writer must die, not exit cleanly"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cookies: Vec<(i32, String)> = stdout
        .lines()
        .filter_map(|l| l.split_once("COOKIE ").map(|(_, rest)| rest))
        .filter_map(|l| {
            let (i, v) = l.split_once(' ')?;
            Some((i.parse().ok()?, v.to_owned()))
        })
        .collect();
    assert_eq!(cookies.len(), 20, "writer output: {stdout}");

    let store = SledStore::builder(&path)
        .temporary(true)
        .open()
        .expect("reopen");
    assert_eq!(store.len(), 20);
    let manager = Manager::new(store, Config::default());
    for (i, value) in cookies {
        let header = format!("session={value}");
        let s = manager.session_from_cookies([header.as_str()]);
        assert_eq!(
            s.get::<i32>("n").await.expect("load"),
            Some(i),
            "session {i} lost"
        );
    }
}
