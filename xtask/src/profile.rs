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
//! A second pass counts the server's system calls per request under
//! `strace -c -f` (the kernel's share of a request, which callgrind does not
//! see), for the cases in [`SYSCALL_CASES`].
//!
//! The tables in BENCHMARKS.md keep one row per profiled binary (`--label`),
//! so a "before" row measured on an older build stays next to the new one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use crate::load::{new_session, requests_served, wait_for};
use crate::{root, Result};

/// What is profiled: (variant, route, wrk connections). A new case goes
/// last: rows measured before it get an empty cell at the end.
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
    // Added in session 8: the least a session read can cost.
    ("axum-floor", "/read", 4),
    // Added in session 18: the least a session read can cost on Redis.
    ("axum-floor-redis", "/read", 4),
];

/// What the system calls are counted for: (variant, route, wrk
/// connections). A new case goes last, as in [`CASES`].
const SYSCALL_CASES: &[(&str, &str, u32)] = &[
    ("axum-bare", "/plain", 4),
    ("axum-ours-memory", "/read", 4),
    ("axum-ours-redis", "/read", 4),
    ("axum-tower-redis", "/read", 4),
    ("axum-ours-postgres", "/read", 4),
    ("axum-tower-postgres", "/read", 4),
    // Added in session 18.
    ("axum-floor-redis", "/read", 4),
];

/// A case's column name: connections are named when not the usual four.
fn case_name(&(variant, route, connections): &(&str, &str, u32)) -> String {
    match connections {
        4 => format!("{variant} {route}"),
        1 => format!("{variant} {route} (1 connection)"),
        n => format!("{variant} {route} ({n} connections)"),
    }
}

/// Where a table lives in BENCHMARKS.md, and what precedes its rows.
struct Table {
    start: &'static str,
    end: &'static str,
    intro: &'static str,
    cases: &'static [(&'static str, &'static str, u32)],
}

/// Instructions per request; its introduction is the load report's profile
/// narrative, just above it.
const INSTRUCTIONS: Table = Table {
    start: "<!-- profile:start -->",
    end: "<!-- profile:end -->",
    intro: "",
    cases: CASES,
};

const SYSCALLS: Table = Table {
    start: "<!-- syscalls:start -->",
    end: "<!-- syscalls:end -->",
    intro: "System calls per request, from the same command: the server runs under \
            `strace -c -f` while `wrk -t1 -c4` drives it, and its calls are divided by the \
            requests served. Callgrind does not see the kernel, which takes about half of \
            the server's CPU in these scenarios.\n\n",
    cases: SYSCALL_CASES,
};

/// The profile tables of a BENCHMARKS.md, from the first one's start marker
/// to the last one's end marker, for the load report to keep.
pub(crate) fn tables(text: &str) -> Option<&str> {
    let start = text.find(INSTRUCTIONS.start)?;
    let end = [INSTRUCTIONS.end, SYSCALLS.end]
        .iter()
        .filter_map(|m| text.find(m).map(|i| i + m.len()))
        .max()?;
    text.get(start..end)
}

/// Profiles `bin` (default: a fresh release build of `session-loadtest`) and
/// records the row under `label`.
pub(crate) fn bench_profile(label: &str, bin: Option<PathBuf>) -> Result {
    let bin = match bin {
        Some(bin) => bin,
        None => crate::load::build_server()?,
    };
    let dir = std::env::temp_dir().join(format!("xtask-profile-{}", std::process::id()));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // The Redis cases use the load test's database, emptied before and after.
    crate::load::cleanup(&bin);
    let cells = measure_all(&INSTRUCTIONS, 18_200, "instructions", |case, port| {
        instructions_per_request(&Run::new(&bin, &dir, case, port)).map(|ir| ir.to_string())
    });
    let calls = measure_all(&SYSCALLS, 18_250, "system calls", |case, port| {
        syscalls_per_request(&Run::new(&bin, &dir, case, port)).map(|n| format!("{n:.2}"))
    });
    crate::load::cleanup(&bin);
    let _ = fs::remove_dir_all(&dir);
    if cells.iter().chain(&calls).all(Option::is_none) {
        return Err("no case could be measured".into());
    }
    write_row(&INSTRUCTIONS, label, &cells)?;
    write_row(&SYSCALLS, label, &calls)
}

/// Measures each case of `table` on its own port, from `first_port` on. A
/// case that cannot run (no Redis, say) leaves its cell empty; the others
/// still count.
fn measure_all(
    table: &Table,
    first_port: u16,
    what: &str,
    measure: impl Fn(&(&str, &str, u32), u16) -> Result<String>,
) -> Vec<Option<String>> {
    table
        .cases
        .iter()
        .zip(first_port..)
        .map(|(case, port)| {
            let name = case_name(case);
            match measure(case, port) {
                Ok(value) => {
                    eprintln!("xtask: {name}: {value} {what} per request");
                    Some(value)
                }
                Err(e) => {
                    eprintln!("xtask: {name}: {what} not measured: {e}");
                    None
                }
            }
        })
        .collect()
}

/// One case on its port: what both measurements start from.
struct Run<'a> {
    bin: &'a Path,
    dir: &'a Path,
    variant: &'a str,
    route: &'a str,
    connections: u32,
    port: u16,
}

impl<'a> Run<'a> {
    fn new(
        bin: &'a Path,
        dir: &'a Path,
        &(variant, route, connections): &(&'a str, &'a str, u32),
        port: u16,
    ) -> Self {
        Self {
            bin,
            dir,
            variant,
            route,
            connections,
            port,
        }
    }

    /// The server's own arguments, after the binary.
    fn serve_args(&self) -> [String; 3] {
        [
            "serve".to_owned(),
            self.variant.to_owned(),
            self.port.to_string(),
        ]
    }

    /// Waits for the server, drives it with wrk and returns the requests served.
    fn drive(&self, server: &mut Child) -> Result<u64> {
        drive(self.port, self.route, self.connections, server)
    }
}

/// Spawns `cmd` with its output discarded; `what` names it in the error.
fn spawn_quiet(cmd: &mut Command, what: &str) -> Result<Child> {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))
}

/// Runs the server, counts its system calls under `strace -c -f` while wrk
/// drives it, and divides them by the requests served.
fn syscalls_per_request(run: &Run) -> Result<f64> {
    let out = run.dir.join(format!("strace.{}", run.port));
    let mut server = spawn_quiet(
        Command::new(run.bin).args(run.serve_args()),
        "the load-test server",
    )?;
    let counted = (|| {
        wait_for(run.port, &mut server)?;
        let mut strace = spawn_quiet(
            Command::new("strace")
                .args(["-c", "-f", "-o"])
                .arg(&out)
                .args(["-p", &server.id().to_string()]),
            "strace (apt-get install strace)",
        )?;
        // strace attaches to every thread before the load starts.
        sleep(Duration::from_millis(500));
        let driven = run.drive(&mut server);
        // SIGINT: strace detaches and writes its summary.
        Command::new("kill")
            .args(["-INT", &strace.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        strace.wait().map_err(|e| e.to_string())?;
        let requests = driven?;
        let summary = fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let calls = total_calls(&summary).ok_or("strace wrote no total")?;
        #[allow(clippy::cast_precision_loss)]
        Ok(calls as f64 / requests as f64)
    })();
    let _ = server.kill();
    let _ = server.wait();
    counted
}

/// The call count of `strace -c`'s `total` line (`% time, seconds,
/// usecs/call, calls, [errors,] total`).
fn total_calls(summary: &str) -> Option<u64> {
    summary.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.last() {
            Some(&"total") => fields.get(3)?.parse().ok(),
            _ => None,
        }
    })
}

/// Runs the server under callgrind while wrk drives it, and divides the
/// instructions it executed by the requests served.
fn instructions_per_request(run: &Run) -> Result<u64> {
    let out = run.dir.join(format!("callgrind.{}", run.port));
    let mut server = spawn_quiet(
        Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(run.bin)
            .args(run.serve_args()),
        "valgrind (apt-get install valgrind)",
    )?;
    let driven = run.drive(&mut server);
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
fn drive(port: u16, route: &str, connections: u32, server: &mut Child) -> Result<u64> {
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

/// Writes or replaces the row `label` in one of BENCHMARKS.md's profile
/// tables.
fn write_row(table: &Table, label: &str, cells: &[Option<String>]) -> Result {
    let (start, end, cases) = (table.start, table.end, table.cases);
    let path = root().join("BENCHMARKS.md");
    let text = fs::read_to_string(&path).unwrap_or_default();
    let header = {
        let names: Vec<String> = cases.iter().map(case_name).collect();
        format!(
            "| build | {} |\n|---|{}\n",
            names.join(" | "),
            "---|".repeat(cases.len())
        )
    };
    let mut rows: Vec<String> = match (text.find(start), text.find(end)) {
        (Some(s), Some(e)) if s < e => text[s + start.len()..e]
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| build"))
            .filter(|l| !l.starts_with(&format!("| {label} |")))
            .map(|row| {
                // Rows measured before a case was added have no cell for it.
                let missing = (cases.len() + 2).saturating_sub(row.matches('|').count());
                format!("{row}{}", " – |".repeat(missing))
            })
            .collect(),
        _ => Vec::new(),
    };
    let values: Vec<&str> = cells.iter().map(|c| c.as_deref().unwrap_or("–")).collect();
    rows.push(format!("| {label} | {} |", values.join(" | ")));
    let block = format!("{start}\n{}{header}{}\n{end}", table.intro, rows.join("\n"));
    let text = match (text.find(start), text.find(end)) {
        (Some(s), Some(e)) if s < e => format!("{}{block}{}", &text[..s], &text[e + end.len()..]),
        _ => format!("{text}\n{block}\n"),
    };
    fs::write(&path, text).map_err(|e| e.to_string())?;
    eprintln!("xtask: BENCHMARKS.md row {label:?} written between {start} and {end}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{tables, total_calls};

    #[test]
    fn the_load_report_keeps_both_tables() {
        let text = "# Benchmarks\nold narrative\n<!-- profile:start -->\n| a |\n<!-- profile:end -->\n\n<!-- syscalls:start -->\n| b |\n<!-- syscalls:end -->\n";
        let kept = tables(text).unwrap();
        assert!(kept.starts_with("<!-- profile:start -->"));
        assert!(kept.ends_with("<!-- syscalls:end -->"));
        let only_first = "<!-- profile:start -->\n| a |\n<!-- profile:end -->\ntrailing";
        assert_eq!(
            tables(only_first).unwrap(),
            "<!-- profile:start -->\n| a |\n<!-- profile:end -->"
        );
        assert_eq!(tables("no tables"), None);
    }

    #[test]
    fn reads_the_total_of_an_strace_summary() {
        let summary = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 58.10    0.120000           2     47040           writev
 41.90    0.086000           1     47080        12 recvfrom
------ ----------- ----------- --------- --------- ----------------
100.00    0.206000           2     94120        12 total
";
        assert_eq!(total_calls(summary), Some(94_120));
        let without_errors = summary.replace("        12 total", " total");
        assert_eq!(total_calls(&without_errors), Some(94_120));
        assert_eq!(
            total_calls("strace: attach: ptrace(PTRACE_SEIZE, 1): denied"),
            None
        );
    }
}
