//! `cargo xtask bench profile`: instructions per request under callgrind.
//!
//! Wall-clock numbers on a shared 2-core machine move by tens of percent from
//! one run to the next; callgrind counts the instructions the server executes,
//! which repeat to within a percent for the same binary. Each case runs one
//! `session-loadtest` server under `valgrind --tool=callgrind`, drives it with
//! `wrk -t1 -c4` (or the case's connections) for a few seconds, stops it with SIGTERM (so callgrind writes
//! its totals) and divides the instructions by the requests served. Start-up
//! is included and amortized over the requests.
//!
//! The table in BENCHMARKS.md keeps one row per profiled binary (`--label`),
//! so a "before" row measured on an older build stays next to the new one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use crate::load::{new_session, requests_served, wait_for};
use crate::{cargo, root, Result};

/// What is profiled: (variant, route, wrk connections).
const CASES: &[(&str, &str, u32)] = &[
    ("axum-bare", "/plain", 4),
    ("axum-ours-memory", "/plain", 4),
    ("axum-ours-memory", "/read", 4),
    ("axum-ours-memory", "/write", 4),
    ("axum-tower-memory", "/plain", 4),
    ("axum-tower-memory", "/read", 4),
    ("axum-tower-memory", "/write", 4),
    ("axum-ours-redis", "/read", 4),
    ("axum-tower-redis", "/read", 4),
    // Added in session 5; earlier rows have no cell for it.
    ("axum-layered", "/plain", 4),
    // Added in session 6: an update with nobody to gather with.
    ("axum-ours-memory", "/write", 1),
];

/// A case's column name: connections are named when not the usual four.
fn case_name(&(variant, route, connections): &(&str, &str, u32)) -> String {
    match connections {
        4 => format!("{variant} {route}"),
        1 => format!("{variant} {route} (1 connection)"),
        n => format!("{variant} {route} ({n} connections)"),
    }
}

const START: &str = "<!-- profile:start -->";
const END: &str = "<!-- profile:end -->";

/// Profiles `bin` (default: a fresh release build of `session-loadtest`) and
/// records the row under `label`.
pub(crate) fn bench_profile(label: &str, bin: Option<PathBuf>) -> Result {
    let bin = match bin {
        Some(bin) => bin,
        None => {
            cargo(&["build", "--release", "-p", "session-loadtest"], &[])?;
            crate::load::target_dir()
                .join("release")
                .join("session-loadtest")
        }
    };
    let dir = std::env::temp_dir().join(format!("xtask-profile-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cells = Vec::new();
    // The Redis cases use the load test's database, emptied before and after.
    crate::load::cleanup(&bin);
    for (i, &(variant, route, connections)) in CASES.iter().enumerate() {
        let port = 18_200 + u16::try_from(i).unwrap_or(0);
        // A case that cannot run (no Redis, say) leaves its cell empty; the
        // others still count.
        let name = case_name(&CASES[i]);
        match instructions_per_request(&bin, variant, route, connections, port, &dir) {
            Ok(ir) => {
                eprintln!("xtask: {name}: {ir} instructions per request");
                cells.push(Some(ir));
            }
            Err(e) => {
                eprintln!("xtask: {name}: not measured: {e}");
                cells.push(None);
            }
        }
    }
    crate::load::cleanup(&bin);
    let _ = fs::remove_dir_all(&dir);
    if cells.iter().all(Option::is_none) {
        return Err("no case could be measured".into());
    }
    write_row(label, &cells)
}

fn instructions_per_request(
    bin: &Path,
    variant: &str,
    route: &str,
    connections: u32,
    port: u16,
    dir: &Path,
) -> Result<u64> {
    let out = dir.join(format!("callgrind.{port}"));
    let mut server = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(bin)
        .args(["serve", variant, &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run valgrind (apt-get install valgrind): {e}"))?;
    let driven = drive(port, route, connections, &mut server);
    // Stop the server whatever happened: SIGTERM, so callgrind writes its
    // totals.
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    server.wait().map_err(|e| e.to_string())?;
    let requests = driven?;
    sleep(Duration::from_millis(200));
    let profile = fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let total = profile
        .lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("callgrind wrote no totals")?;
    Ok(total / requests)
}

/// Waits for the server, runs wrk against `route` and returns the requests
/// served.
fn drive(
    port: u16,
    route: &str,
    connections: u32,
    server: &mut std::process::Child,
) -> Result<u64> {
    wait_for(port, server)?;
    let mut wrk = Command::new("wrk");
    wrk.args(["-t1", &format!("-c{connections}"), "-d5s"]);
    if route != "/plain" {
        wrk.args(["-H", &format!("Cookie: {}", new_session(port)?)]);
    }
    let run = wrk
        .arg(format!("http://127.0.0.1:{port}{route}"))
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install wrk): {e}"))?;
    match requests_served(&String::from_utf8_lossy(&run.stdout)) {
        0 => Err("wrk reported no requests".to_owned()),
        n => Ok(n),
    }
}

/// Writes or replaces the row `label` in BENCHMARKS.md's profile table.
fn write_row(label: &str, cells: &[Option<u64>]) -> Result {
    let path = root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let header = {
        let names: Vec<String> = CASES.iter().map(case_name).collect();
        format!(
            "| build | {} |\n|---|{}\n",
            names.join(" | "),
            "---|".repeat(CASES.len())
        )
    };
    let mut rows: Vec<String> = match (text.find(START), text.find(END)) {
        (Some(s), Some(e)) if s < e => text[s + START.len()..e]
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| build"))
            .filter(|l| !l.starts_with(&format!("| {label} |")))
            .map(|row| {
                // Rows measured before a case was added have no cell for it.
                let missing = (CASES.len() + 2).saturating_sub(row.matches('|').count());
                format!("{row}{}", " – |".repeat(missing))
            })
            .collect(),
        _ => Vec::new(),
    };
    let values: Vec<String> = cells
        .iter()
        .map(|c| c.map_or_else(|| "–".to_owned(), |ir| ir.to_string()))
        .collect();
    rows.push(format!("| {label} | {} |", values.join(" | ")));
    let block = format!("{START}\n{header}{}\n{END}", rows.join("\n"));
    let text = match (text.find(START), text.find(END)) {
        (Some(s), Some(e)) if s < e => format!("{}{block}{}", &text[..s], &text[e + END.len()..]),
        _ => format!("{text}\n{block}\n"),
    };
    fs::write(&path, text).map_err(|e| e.to_string())?;
    eprintln!("xtask: BENCHMARKS.md profile row {label:?} written");
    Ok(())
}
