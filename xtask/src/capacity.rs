//! CAPACITY.md, the capacity model, computed from the figures the last load
//! run wrote into BENCHMARKS.md (`cargo xtask bench capacity`, and at the end
//! of every `cargo xtask bench load`): bytes per session of each store, store
//! calls per request and the session's CPU per request. The assumptions (the
//! traffic, the record size, what one Redis primary or one PostgreSQL
//! primary sustains) are stated in the text; every number that comes from a
//! measurement is read from the tables, none is typed here.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use crate::{root, Result};

/// Live sessions the model holds.
const SESSIONS: f64 = 100e6;
/// Requests per second the model serves.
const REQUESTS: f64 = 1e6;
/// Shares of the requests: never touching the session, reading it,
/// writing it, creating one.
const MIX: [(&str, f64); 4] = [
    ("untouched", 0.20),
    ("read", 0.70),
    ("write", 0.09),
    ("new", 0.01),
];
/// Sessions active in any minute (users active about once every 10 s).
const ACTIVE_PER_MINUTE: f64 = 10e6;
/// The bytes of one session's encoded record in the model: a user id, a
/// CSRF token, a few flags, the odd flash message, and the envelope.
const RECORD: f64 = 380.0;
/// Store calls of an uncontended write on an instance that did not save
/// the session last (a load, then a compare-and-set): not a load-table row.
const FLEET_WRITE_CALLS: f64 = 2.0;
/// Session operations one Redis primary is planned for (see the text).
const REDIS_OPS_PER_PRIMARY: f64 = 150_000.0;
/// Session operations one PostgreSQL primary is planned for.
const POSTGRES_OPS_PER_PRIMARY: f64 = 50_000.0;
/// The load a primary or an instance is planned at.
const PLANNED_LOAD: f64 = 0.70;
/// A handler's own CPU per request (templating, business logic, other I/O).
const HANDLER_CPU_US: f64 = 150.0;
/// Cores per application instance.
const CORES_PER_INSTANCE: f64 = 4.0;
/// Connections each instance's `PostgresStore` pool opens.
const POSTGRES_POOL: f64 = 10.0;

/// A bytes-table row: bytes per session, and of them the encoded record.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bytes {
    total: f64,
    record: f64,
}

impl Bytes {
    fn overhead(self) -> f64 {
        self.total - self.record
    }
}

/// What the model reads from BENCHMARKS.md.
#[derive(Debug, Clone, PartialEq)]
struct Inputs {
    memory: Bytes,
    memory_owned: Bytes,
    redis: Bytes,
    postgres: Bytes,
    /// Rows of the load table, by (variant, scenario), cells by column name.
    rows: BTreeMap<(String, String), BTreeMap<String, String>>,
}

/// The number at the start of a cell (`217 B`, `+2.07 µs`, `1.00`).
fn number(cell: &str) -> Option<f64> {
    let end = cell
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(cell.len());
    cell[..end].parse().ok()
}

fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_start_matches('|')
        .trim_end_matches('|')
        .split(" | ")
        .map(|c| c.trim().to_owned())
        .collect()
}

fn inputs(benchmarks: &str) -> Result<Inputs> {
    let bytes = |label: &str| -> Result<Bytes> {
        let line = benchmarks
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .ok_or_else(|| format!("BENCHMARKS.md has no bytes row for {label}"))?;
        let c = cells(line);
        match (
            c.get(2).and_then(|v| number(v)),
            c.get(3).and_then(|v| number(v)),
        ) {
            (Some(total), Some(record)) if total > 0.0 && record > 0.0 => {
                Ok(Bytes { total, record })
            }
            _ => Err(format!(
                "BENCHMARKS.md's bytes row for {label} is not measured: {line}"
            )),
        }
    };
    let mut lines = benchmarks.lines();
    let header = lines
        .by_ref()
        .find(|l| l.starts_with("| variant | scenario |"))
        .ok_or("BENCHMARKS.md has no load table")?;
    let names = cells(header);
    let mut rows = BTreeMap::new();
    for line in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let c = cells(line);
        let row: BTreeMap<String, String> = names.iter().cloned().zip(c.iter().cloned()).collect();
        rows.insert((c[0].clone(), c.get(1).cloned().unwrap_or_default()), row);
    }
    Ok(Inputs {
        memory: bytes("ours, `MemoryStore` (process RSS)")?,
        memory_owned: bytes("ours, `MemoryStore`, each session logged in")?,
        redis: bytes("ours, `RedisStore`")?,
        postgres: bytes("ours, `PostgresStore`")?,
        rows,
    })
}

impl Inputs {
    /// A figure of the load table.
    fn figure(&self, variant: &str, scenario: &str, column: &str) -> Result<f64> {
        self.rows
            .get(&(variant.to_owned(), scenario.to_owned()))
            .and_then(|row| row.get(column))
            .and_then(|cell| number(cell))
            .ok_or_else(|| format!("BENCHMARKS.md has no {column:?} for {variant} {scenario}"))
    }
}

fn share(kind: &str) -> f64 {
    MIX.iter()
        .find(|(k, _)| *k == kind)
        .map_or(0.0, |(_, s)| *s)
}

fn gb(bytes: f64) -> String {
    format!("{:.0} GB", bytes / 1e9)
}

fn thousands(n: f64) -> String {
    format!("{:.0} 000", (n / 1000.0).round())
}

fn millions(n: f64) -> String {
    format!("{:.2} M", n / 1e6)
}

fn render(i: &Inputs) -> Result<String> {
    let calls = |v: &str, s: &str| i.figure(v, s, "store calls / request");
    let over = |v: &str, s: &str| i.figure(v, s, "over bare");
    let read_calls = calls("axum-ours-redis", "read")?;
    let read_writes = i.figure("axum-ours-redis", "read", "of which writes")?;
    let new_calls = calls("axum-ours-redis", "new")?;
    let own_calls = calls("axum-ours-redis", "write-own")?;
    let shared_calls = calls("axum-ours-redis", "write")?;
    let bare_cpu = i.figure("axum-bare", "plain", "server CPU / request")?;
    let (mem_read, redis_read, cached_read) = (
        over("axum-ours-memory", "read")?,
        over("axum-ours-redis", "read")?,
        over("axum-ours-redis-cached", "read")?,
    );
    let (redis_own, redis_new) = (
        over("axum-ours-redis", "write-own")?,
        over("axum-ours-redis", "new")?,
    );
    let tower_read = over("axum-tower-redis", "read")?;

    // Store operations per second.
    let reads = REQUESTS * share("read") * read_calls;
    let touches = ACTIVE_PER_MINUTE / 60.0;
    let writes = REQUESTS * share("write") * FLEET_WRITE_CALLS;
    let creates = REQUESTS * share("new") * new_calls;
    let total = reads + touches + writes + creates;
    // Of them, writes: the touches, the saves (half a fleet write's calls)
    // and the creates.
    let written = touches + REQUESTS * share("write") + creates;
    let ops_owned = total + written;

    // Redis Cluster.
    let redis_data = SESSIONS * (RECORD + i.redis.overhead());
    let primaries_at_full = (ops_owned / REDIS_OPS_PER_PRIMARY).ceil();
    let primaries = (ops_owned / (REDIS_OPS_PER_PRIMARY * PLANNED_LOAD)).ceil();
    let primaries_anonymous = (total / (REDIS_OPS_PER_PRIMARY * PLANNED_LOAD)).ceil();
    let per_primary = redis_data / primaries;

    // PostgreSQL.
    let pg_live = SESSIONS * (RECORD + i.postgres.overhead());
    let pg_active = ACTIVE_PER_MINUTE * (RECORD + i.postgres.overhead());
    let pg_primaries = (total / (POSTGRES_OPS_PER_PRIMARY * PLANNED_LOAD)).ceil();
    let expiring = SESSIONS / 7200.0;

    // Application instances.
    // A write in a fleet loads, then saves: a read's cost and a saving
    // write's.
    let fleet_write = redis_read + redis_own;
    let session_cores = (REQUESTS * share("read") * redis_read
        + REQUESTS * share("write") * fleet_write
        + REQUESTS * share("new") * redis_new)
        / 1e6;
    let framework_cores = REQUESTS * bare_cpu / 1e6;
    let cores = REQUESTS * HANDLER_CPU_US / 1e6 + framework_cores + session_cores;
    let instances = (cores / CORES_PER_INSTANCE / PLANNED_LOAD).ceil();

    // In one process.
    let memory = SESSIONS * (RECORD + i.memory.overhead());
    let memory_owned = SESSIONS * (RECORD + i.memory_owned.overhead());

    let mut out = String::new();
    let _ = write!(
        out,
        "# Capacity model

What it takes to hold **100 million live sessions** and serve **1 million
requests per second**, computed by `cargo xtask bench capacity` (also at the
end of every `cargo xtask bench load`) from what the last load run measured
and wrote into [BENCHMARKS.md](BENCHMARKS.md): bytes per session (its bytes
table, `session-loadtest memory`), store calls per request (the `store calls
/ request` column, counted by an instrumented store) and the session's CPU
per request (the `over bare` column). Regenerate after a load run; the
assumptions are stated so you can redo the arithmetic with your own.

## Inputs measured by the last load run

| input | value | source |
|---|---|---|
| Redis memory per session | {redis_total:.0} B for a record of {redis_record:.0} B: {redis_over:.0} B of key, header, write tokens, string and expiry overhead | bytes table, `RedisStore` row |
| PostgreSQL table + index per session | {pg_total:.0} B for a record of {pg_record:.0} B: {pg_over:.0} B overhead | bytes table, `PostgresStore` row |
| `MemoryStore` resident memory per session | {mem_total:.0} B for a record of {mem_record:.0} B: {mem_over:.0} B overhead; logged in as an owner of its own, {owned_total:.0} B ({owned_over:.0} B overhead) | bytes table, `MemoryStore` rows |
| store calls per `read` on Redis | {read_calls:.2}, of which writes {read_writes:.2} (a touch at most once per touch interval, 60 s, per session) | `axum-ours-redis` `read` |
| store calls per new session | {new_calls:.2} | `axum-ours-redis` `new` |
| store calls per write, a user writing their own session again | {own_calls:.2} (the save; this process's last copy spares the load) | `axum-ours-redis` `write-own` |
| store calls per request, 16 concurrent writers of one session | {shared_calls:.2} (group commit: one save carries many requests' increments) | `axum-ours-redis` `write` |
| session CPU per request beyond bare axum (whose own is {bare_cpu:.2} µs) | `read`: {mem_read:+.2} µs on `MemoryStore`, {redis_read:+.2} µs on Redis (tower-sessions: {tower_read:+.2} µs), {cached_read:+.2} µs on Redis behind a `CachedStore` (a hot session); Redis `new` {redis_new:+.2} µs, `write-own` {redis_own:+.2} µs (against bare axum under its 16 wrk threads) | `over bare` column |

Machines differ: bare axum's own CPU per request moves by half between the
shared machines these runs come from, and the session's figures with it.

## Assumptions

* **Sessions**: 100 M live (idle timeout 2 h, the default), each a record of
  about {RECORD:.0} B (a user id, a CSRF token, a few flags, the odd flash
  message, and the envelope: id, timestamps, version, owner). Each store's
  overhead per session is taken from its measured row above.
* **Traffic**: 1 M requests/s, of which {untouched:.0} % never touch the
  session (assets, health checks, public API), {read:.0} % read it, {write:.0} %
  write it, {new:.0} % create one. Users are active about once every 10 s, so
  about 10 M sessions are active in any minute, and each active session is
  touched at most once a minute.
* **Writes are mostly uncontended** (one user, one request at a time) and, in
  a fleet behind a load balancer, rarely land on the instance that saved the
  session last: {FLEET_WRITE_CALLS:.0} store calls each (load, then
  compare-and-set). The `write-own` row's {own_calls:.2} calls per write is
  the single-instance best case.
* **A Redis primary** is planned at {redis_plan} session operations/s: a
  Redis core served about 980 000 `HMGET`/s pipelined and 79 000/s one per
  round trip with `redis-benchmark` on an earlier machine of this kind, when
  sessions were hashes (loads are a `GET` now; see
  \"Redis throughput\" below; redo it on your servers); each app instance
  pipelines its concurrent requests over one connection per primary, and
  scripts cost a few times a `GET`. **A PostgreSQL primary** is planned at
  {pg_plan} session operations/s (single-row statements, each write a commit).
* **Handlers** spend {HANDLER_CPU_US:.0} µs of CPU per request of their own
  (templating, business logic, other I/O); instances have {CORES_PER_INSTANCE:.0}
  cores.
* Headroom: servers and instances planned at {load:.0} % of their capacity,
  Redis memory at 50 % (fragmentation and copy-on-write during persistence).

## Store operations per second

| source | per second |
|---|---|
| reads: {reads_m} × {read_calls:.2} calls | {reads_n} |
| touches: 10 M active sessions / 60 s | ≤ {touches_n} |
| writes: {writes_m} × {FLEET_WRITE_CALLS:.0} calls (load + save) | {writes_n} |
| new sessions: {creates_m} × {new_calls:.2} calls | {creates_n} |
| **total** | **≈ {total_m}, of which ≈ {written_m} writes** (touches, saves and creates) |
| on Redis, sessions with an owner: one more command on the owner's index per write | up to + {written_m} if every session is logged in: **≈ {owned_m}** |

## Redis Cluster (the recommended store at this scale)

* **Memory**: 100 M × ({RECORD:.0} B + {redis_over:.0} B) ≈ **{redis_gb}** of
  data; at 50 % headroom ≈ {redis_gb2} across the primaries, the same again
  for one replica each.
* **Throughput**: each operation is one single-key command (`GET` to load,
  `SET NX` to create, a short Lua script to save or touch), so the cluster
  scales linearly with shards and needs no cross-slot work. A session with an
  owner (after `login`) adds a command on its owner's index (a sorted set,
  possibly on another shard) to each create, save, touch and delete. With
  every session logged in, {owned_m} / {redis_plan} ≈ {primaries_at_full:.0}
  primaries; at {load:.0} % load, **{primaries:.0} primaries** ({primaries_anonymous:.0}
  when few sessions have an owner).
* **Result**: **{primaries:.0} primaries + {primaries:.0} replicas**, each
  holding ≈ {per_primary_gb} of sessions: give each twice that, plus the OS
  and the owner index (one sorted-set entry per logged-in session, its bytes
  not measured here). Operations bind first; with sessions of a few
  kilobytes, memory does.
* **Connections**: `RedisStore` multiplexes every request of an app instance
  over one connection per primary, so {instances:.0} instances ×
  {primaries:.0} primaries = {redis_connections:.0} connections in all,
  {instances:.0} per Redis node (on actix-web, with the store built in the app
  factory as the README shows, one per worker: multiply by the workers).

## PostgreSQL

* **Storage**: 100 M × ({RECORD:.0} B + {pg_over:.0} B) ≈ {pg_gb} live; saves
  and touches write new row versions (MVCC), so with autovacuum keeping up,
  plan ≈ {pg_gb2}. The active set (10 M sessions ≈ {pg_active_gb}) fits in
  `shared_buffers` of a large server.
* **Throughput**: {written_m} single-row writes/s, each a commit, is beyond
  one primary. Loads cannot go to asynchronous replicas (a stale load turns
  every save into a conflict and a retry). At {pg_plan} operations/s per
  primary, planned at {load:.0} % load, {total_m} operations/s need **about
  {pg_primaries:.0} primaries,
  the sessions split by record id** (a small `Store` wrapper that routes each
  call by `RecordId`; not shipped), or Redis.
* **Connections**: a pool of {POSTGRES_POOL:.0} per instance (what
  `PostgresStore::connect` sets) × {instances:.0} instances = {pg_connections:.0}
  per primary without splitting: put PgBouncer (transaction mode) in front.
  sqlx prepares named statements, which transaction mode carries only from
  PgBouncer 1.21 with `max_prepared_statements` set; with an older PgBouncer
  use session mode.
* **Sweeper**: `delete_expired` removes expired rows in batches; at 100 M
  sessions with a 2 h idle timeout about {expiring} rows expire per second,
  so run the `Sweeper` every few seconds (each sweep deletes every expired
  row, in statements of 1 000 rows).

## Application instances

* The session layer costs, per request on Redis, {redis_read:.2} µs of CPU to
  read, {fleet_write:.2} µs to write in a fleet (a load, then a save:
  {redis_read:.2} + {redis_own:.2} µs) and {redis_new:.2} µs to create
  (beyond bare axum, on the load run's machine): at this mix, ≈
  {session_cores:.1} cores for session work in all, small next to the
  handlers' own work.
* Handlers at {HANDLER_CPU_US:.0} µs per request need {handler_cores:.0}
  cores, the framework's own {bare_cpu:.2} µs per request (bare axum, on
  the same machine) {framework_cores:.1}; with the session's, {cores:.0}
  cores: **{instances:.0} instances of
  {CORES_PER_INSTANCE:.0} cores** at {load:.0} % load, any of which can serve
  any session (the store is shared; no sticky routing).

## `MemoryStore` and `SledStore`

Both keep sessions in one process (or one machine's disk): 100 M sessions of
{RECORD:.0}-byte records take ≈ {memory_gb} of RAM in `MemoryStore` ({mem_over:.0} B
of overhead each; ≈ {memory_owned_gb} if every session is logged in, at
{owned_over:.0} B), and survive no restart (`MemoryStore`) or no machine loss
(`SledStore`). At this scale they fit only behind sticky routing, each
instance owning a slice of the users, and every restart logs that slice out.
Use them for one-instance deployments and tests; use Redis for fleets.

## Redis throughput

The planning figure comes from Redis's own benchmark tool against the local
server, with a session-shaped value:

```sh
redis-cli SET bench:s \"$(head -c 380 /dev/zero | tr '\\0' x)\"
redis-benchmark -n 1000000 -c 16 -P 16 -q GET bench:s   # pipelined
redis-benchmark -n 300000 -c 16 -P 1 -q GET bench:s     # one per round trip
redis-cli DEL bench:s
```

Redis runs one command at a time on one core, so a primary's rate is what
one core achieves; redo the measurement on your servers.
",
        redis_total = i.redis.total,
        redis_record = i.redis.record,
        redis_over = i.redis.overhead(),
        pg_total = i.postgres.total,
        pg_record = i.postgres.record,
        pg_over = i.postgres.overhead(),
        mem_total = i.memory.total,
        mem_record = i.memory.record,
        mem_over = i.memory.overhead(),
        owned_total = i.memory_owned.total,
        owned_over = i.memory_owned.overhead(),
        untouched = share("untouched") * 100.0,
        read = share("read") * 100.0,
        write = share("write") * 100.0,
        new = share("new") * 100.0,
        redis_plan = thousands(REDIS_OPS_PER_PRIMARY),
        pg_plan = thousands(POSTGRES_OPS_PER_PRIMARY),
        load = PLANNED_LOAD * 100.0,
        reads_m = millions(REQUESTS * share("read")),
        reads_n = thousands(reads),
        touches_n = thousands(touches),
        writes_m = millions(REQUESTS * share("write")),
        writes_n = thousands(writes),
        creates_m = millions(REQUESTS * share("new")),
        creates_n = thousands(creates),
        total_m = millions(total),
        written_m = millions(written),
        owned_m = millions(ops_owned),
        redis_gb = gb(redis_data),
        redis_gb2 = gb(redis_data * 2.0),
        per_primary_gb = gb(per_primary),
        redis_connections = instances * primaries,
        pg_gb = gb(pg_live),
        pg_gb2 = gb(pg_live * 2.0),
        pg_active_gb = gb(pg_active),
        pg_connections = instances * POSTGRES_POOL,
        expiring = thousands(expiring),
        handler_cores = REQUESTS * HANDLER_CPU_US / 1e6,
        memory_gb = gb(memory),
        memory_owned_gb = gb(memory_owned),
    );
    Ok(out)
}

/// CAPACITY.md as the figures in `benchmarks` (BENCHMARKS.md's text) make
/// it; when the last load run left a figure unmeasured (a store's server was
/// down), a page that says which, instead of a model built on zeros.
pub(crate) fn capacity_of(benchmarks: &str) -> String {
    match inputs(benchmarks).and_then(|i| render(&i)) {
        Ok(model) => model,
        Err(missing) => format!(
            "# Capacity model\n\n\
             Not computed: {missing}. The model is built from the figures of the last\n\
             load run in [BENCHMARKS.md](BENCHMARKS.md); run `cargo xtask bench load` where\n\
             wrk, Redis and PostgreSQL are at hand, which writes this page again.\n"
        ),
    }
}

/// Writes CAPACITY.md from BENCHMARKS.md.
pub(crate) fn write() -> Result {
    let benchmarks = fs::read_to_string(root().join("BENCHMARKS.md"))
        .map_err(|e| format!("BENCHMARKS.md: {e}"))?;
    let text = capacity_of(&benchmarks);
    fs::write(root().join("CAPACITY.md"), text).map_err(|e| format!("CAPACITY.md: {e}"))?;
    eprintln!("xtask: CAPACITY.md written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CAPACITY.md is what the command makes of BENCHMARKS.md: no number in
    /// it was typed by hand, and a load run that changed the figures
    /// without regenerating it fails here.
    #[test]
    fn capacity_md_is_generated_from_benchmarks_md() {
        let benchmarks = fs::read_to_string(root().join("BENCHMARKS.md")).unwrap();
        let capacity = fs::read_to_string(root().join("CAPACITY.md")).unwrap();
        assert!(
            capacity == capacity_of(&benchmarks),
            "CAPACITY.md differs from what `cargo xtask bench capacity` makes of BENCHMARKS.md: run it"
        );
    }

    const SAMPLE: &str = "\
| store | sessions | bytes per session | value kept per session | beyond the value |
|---|---|---|---|---|
| ours, `MemoryStore` (process RSS); value: the encoded record | 1000000 | 220 B | 80 B | 140 B |
| ours, `MemoryStore`, each session logged in as an owner of its own (process RSS) | 1000000 | 400 B | 100 B | 300 B |
| ours, `RedisStore` (Redis `used_memory`) | 100000 | 380 B | 80 B | 300 B |
| ours, `PostgresStore` (table and index size) | 100000 | 280 B | 80 B | 200 B |

| variant | scenario | server CPU / request | over bare | store calls / request | of which writes |
|---|---|---|---|---|---|
| axum-bare | plain | 8.00 µs | +0.00 µs |  |  |
| axum-ours-memory | read | 10.00 µs | +2.00 µs | 1.00 | 0.00 |
| axum-ours-redis | new | 28.00 µs | +20.00 µs | 1.00 | 1.00 |
| axum-ours-redis | read | 18.00 µs | +10.00 µs | 1.00 | 0.00 |
| axum-ours-redis | write | 20.00 µs | +12.00 µs | 0.10 | 0.10 |
| axum-ours-redis | write-own | 28.00 µs | +20.00 µs | 1.00 | 1.00 |
| axum-ours-redis-cached | read | 11.00 µs | +3.00 µs | 0.00 | 0.00 |
| axum-tower-redis | read | 21.00 µs | +13.00 µs |  |  |
";

    /// The model's arithmetic on known figures: store operations, Redis
    /// memory and primaries, PostgreSQL storage, cores and instances.
    #[test]
    fn the_model_is_computed_from_the_measured_figures() {
        let out = capacity_of(SAMPLE);
        let has = |s: &str| assert!(out.contains(s), "{s:?} not in:\n{out}");
        // 0.7 M reads + 167k touches + 180k writes + 10k creates.
        has("**≈ 1.06 M, of which ≈ 0.27 M writes**");
        has("**≈ 1.32 M**");
        // 100 M × (380 + 300) B.
        has("≈ **68 GB** of");
        // 1.32 M / (150k × 0.7) = 12.6.
        has("**13 primaries + 13 replicas**");
        // 100 M × (380 + 200) B, twice for MVCC.
        has("≈ 58 GB live");
        has("plan ≈ 116 GB");
        // 0.7 M × 10 µs + 0.09 M × (10 + 20) µs + 0.01 M × 20 µs = 9.9
        // cores; 150 + 8 (bare axum) + 9.9 = 167.9 cores / 4 / 0.7 = 59.96.
        has("≈\n  9.9 cores");
        has("**60 instances of");
        // 1.06 M / (50k × 0.7) = 30.2.
        has("about\n  31 primaries");
        // 100 M × (380 + 140) B.
        has("≈ 52 GB of RAM");
    }

    /// A bytes row that failed to measure gives a page that says so, not a
    /// model built on zeros.
    #[test]
    fn a_missing_measure_is_named_instead_of_modelled() {
        let broken = SAMPLE.replace(
            "| 100000 | 380 B | 80 B | 300 B |",
            "| 100000 | failed: no server | | |",
        );
        let page = capacity_of(&broken);
        assert!(
            page.starts_with("# Capacity model\n\nNot computed: "),
            "{page}"
        );
        assert!(page.contains("`RedisStore`"), "{page}");
        assert!(!page.contains("primaries"), "{page}");
    }
}
