//! Redis session store for [`session_core`]: one Redis server, or a Redis
//! Cluster, through the [`redis`] crate.
//!
//! ```no_run
//! # async fn run() -> Result<(), session_redis::RedisStoreError> {
//! use session_core::{Config, Manager};
//! use session_redis::RedisStore;
//!
//! // One server; the connection reconnects by itself after failures.
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! // A cluster: the same store, other URLs.
//! let cluster = RedisStore::connect_cluster(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]).await?;
//!
//! let manager = Manager::new(store.with_prefix("myapp:session:"), Config::default());
//! # let _ = (manager, cluster); Ok(()) }
//! ```
//!
//! # Layout
//!
//! Each session is one string under `{prefix}{record id}`: a short header (its
//! version, its deadline in ms since the epoch, its owner) followed by the
//! encoded [`Record`]. Redis expires it by itself (`PXAT`); nothing needs
//! sweeping. Whether a session is live is decided by the app server's clock
//! against the header's deadline (a `save` or `touch` of a session past it
//! finds it missing, as a `load` does; an owner's listing leaves it out and
//! a logout everywhere does not count it), so a Redis server whose clock
//! runs behind keeps a key a little longer but never extends a session.
//! (A `create` still finds such a key taken until Redis drops it: the
//! manager then draws another id.)
//! Each owner has a sorted set `{prefix}owner:{sha256(owner)}` of record ids
//! scored by their deadlines, pruned of expired entries on every write (by
//! the Redis server's clock) and expiring with its last session, so the entry of a session that is gone
//! stays at most until its deadline.
//!
//! # Round trips
//!
//! * `load`: one `GET`.
//! * `create`: one `SET … NX PXAT`.
//! * `save`, `touch`: one server-side script each, atomic on the session's
//!   key (`save` is the compare-and-set on the version, `touch` rewrites the
//!   deadline with `SETRANGE`).
//! * `delete`: one `GETDEL`.
//!
//! A session with an owner also raises its entry in the owner's index before
//! each create, save or touch: on a standalone server in the same script as
//! the write (still one round trip, and atomic), on a Cluster with a command
//! of its own, sent first (the two keys may live on different nodes: two
//! round trips of latency). A delete, or a save that gives the session to
//! another owner, removes the old owner's entry after: on a standalone
//! server only if the session does not name that owner again by then (a
//! later save gave it back). So the index
//! only ever holds an upper bound of each deadline and never hides a live
//! session: when the entry cannot be raised, the write is not made and the
//! call fails.
//!
//! On a Cluster every command and script touches a single key: no multi-key
//! command, no hash tags to get right. A key in the prefix that does not
//! hold a string (a session written by a release that kept hashes, say)
//! reads as no session.
//!
//! Logging an owner out everywhere (`delete_owner`) lists the owner's index,
//! then deletes each listed session that still names the owner. A session
//! that rotates in between (a login, `cycle_id`) writes its successor,
//! whose entry the listing missed, and retires the listed record; the
//! delete then finds that record gone, and the index is listed again for
//! what is new, until a round finds nothing gone (at most eight rounds).
//!
//! Requires Redis 6.2 or later (`GETDEL`, `PXAT`, `ZADD GT`).
//!
//! The index is only as durable as the server that holds it. Run Redis with
//! `maxmemory-policy noeviction` (or an `allkeys-`/`volatile-` policy only on
//! servers that hold no index: index keys carry a TTL, so a `volatile-`
//! policy evicts them first), or a log out everywhere may miss the sessions
//! whose entries were evicted, until their next write raises the entries
//! again. On a Cluster the entry and the session may sit on different
//! primaries: a failover that loses the index primary's last writes
//! (replication is asynchronous) loses entries the same way, and so does a
//! session that changes owners twice in quick succession on one id (the
//! first change's removal of the entry can arrive after the second raised
//! it; the manager never does that, logins and logouts change the id).
//!
//! # Commands the Cluster client sends twice
//!
//! The Cluster client sends a command again when its connection drops, or
//! after its 5 s response timeout, although the first send may have been
//! carried out. A create or a save sent twice is recognised by the write
//! token its value carries (a save, as long as fewer than four other writes
//! landed on top of it), and answers as the first send did. So is a
//! rotation's retiring touch (a touch to a deadline already past): it keeps
//! the old value for up to a minute, marked retired and carrying the
//! touch's token, instead of removing it at once, so that the same touch
//! sent again answers as the first did, while another request's retirement
//! of the same record, a load, a save, a touch and an owner's listing all
//! find it gone. The rotation deletes it right after.
//!
//! A log out everywhere's delete sent twice is not recognised: the second
//! send finds the session gone and does not count it, so on a Cluster the
//! number `delete_owner` answers (and `Manager::destroy_all_of` with it) is
//! a lower bound. Every session still ends.
//!
//! # TLS
//!
//! With the feature `tls-rustls`, `rediss://` URLs connect over TLS
//! (rustls, its `ring` provider), checking the server's certificate against
//! the system's roots (`SSL_CERT_FILE` or `SSL_CERT_DIR` replace them), for a
//! server and for a Cluster alike. [`RedisStore::connect_client`] takes a
//! client built with a private certificate authority or a client
//! certificate, and [`RedisStore::connect_cluster_builder`] a Cluster
//! client's builder given them (`ClusterClientBuilder::certs`). Without the
//! feature, a `rediss://` URL is refused as a configuration error
//! ([`RedisStoreError::Config`]). If the application also enables rustls' `aws-lc-rs` provider,
//! rustls cannot choose one by itself: install one at start with
//! `rustls::crypto::ring::default_provider().install_default()`.

use std::fmt;
use std::future::Future;
use std::sync::LazyLock;

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
use redis::io::tcp::socket2;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Script, ScriptInvocation, Value};
use session_core::{
    Created, Record, RecordId, Saved, Store, StoreError, StoreErrorKind, Timestamp,
};
use sha2::{Digest, Sha256};

mod value;

/// How long a cluster connection waits for a reply before giving up on it:
/// the manager's default store timeout, which answers requests first when it
/// is shorter. The crate's own default (500 ms) is too short for a 1 MiB
/// session on a busy machine. Single-server connections have no response
/// timeout of their own (see [`manager_config`]).
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a connection to a node may take to open.
const CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many times a cluster connection sends a command again (after a
/// dropped connection, a moved slot, a failover), and how long it waits
/// between tries. The crate's own defaults (16 tries, waits of up to 655 s)
/// would resend a command for hours to a caller that waits that long (a
/// store timeout set that long, or the store used without a manager): a
/// rotation's retiring touch resent after its retired value has expired
/// ([`value::RETIRED_FOR_MS`]) would find nothing and conclude that another
/// request ended the session, logging the user out. With these, the tries
/// and the waits between them fit in that time; what bounds a caller is
/// the store timeout (5 s by default), since the client may also spend
/// time rebuilding its slot map between tries, asking nodes that do not
/// answer.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 500;
const CLUSTER_MAX_RETRY_WAIT_MS: u64 = 5_000;
const _: () = assert!(CLUSTER_MIN_RETRY_WAIT_MS < CLUSTER_MAX_RETRY_WAIT_MS);
const _: () = assert!(
    (CLUSTER_RETRIES as u64 + 1)
        * (CONNECTION_TIMEOUT.as_millis() as u64 + RESPONSE_TIMEOUT.as_millis() as u64)
        + CLUSTER_RETRIES as u64 * CLUSTER_MAX_RETRY_WAIT_MS
        < value::RETIRED_FOR_MS
);

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "session:";

/// A failure of the Redis store, converted into [`StoreError`] for the
/// manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The URL or the cluster node list is not valid.
    #[error("invalid Redis connection settings")]
    Config(#[source] RedisError),
    /// Redis could not be reached.
    #[error("cannot connect to Redis")]
    Connect(#[source] RedisError),
    /// A command failed.
    #[error("Redis command for {op} failed")]
    Command {
        /// The store operation.
        op: &'static str,
        /// What Redis or the connection reported.
        #[source]
        source: RedisError,
    },
}

/// `?` on a connect in a `main` (or a set-up function) that returns
/// `std::io::Result`, as the quick start's does: an
/// [`ErrorKind::Other`](std::io::ErrorKind::Other) error whose source is this
/// one.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let store = session_redis::RedisStore::connect("redis://127.0.0.1:6379").await?;
/// # drop(store); Ok(()) }
/// ```
impl From<RedisStoreError> for std::io::Error {
    fn from(e: RedisStoreError) -> Self {
        std::io::Error::other(e)
    }
}

impl From<RedisStoreError> for StoreError {
    fn from(e: RedisStoreError) -> Self {
        let kind = match &e {
            RedisStoreError::Config(_) => StoreErrorKind::Rejected,
            RedisStoreError::Connect(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                StoreErrorKind::Rejected
            }
            RedisStoreError::Connect(_) => StoreErrorKind::Unavailable,
            RedisStoreError::Command { source, .. } => {
                // Checked first: redis reports both as calling for a new
                // connection, but neither is Redis being unreachable. A
                // reply that does not read as what the command returns
                // (`Parse`, as `redis` 1.x reports a conversion failure) is
                // an answer the store cannot interpret; a refused password
                // is a refusal that no retry changes. Both are the likely
                // reading, not a certain one (kinds are for logs): `Parse`
                // is also a reply stream that is not Redis's at all, and
                // redis reports any error answer to `AUTH` as a refused
                // password, a server at its client limit included.
                if matches!(
                    source.kind(),
                    redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
                ) {
                    StoreErrorKind::Corrupted
                } else if source.kind() == redis::ErrorKind::AuthenticationFailed {
                    StoreErrorKind::Rejected
                } else if source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_unrecoverable_error()
                    || source.code().is_some_and(server_busy)
                {
                    StoreErrorKind::Unavailable
                } else {
                    StoreErrorKind::Rejected
                }
            }
        };
        StoreError::new(kind, e)
    }
}

/// Whether a Redis error code says the server cannot serve for now (loading
/// its data, a Cluster slot moving or down, a replica that does not take
/// writes, a script running too long), rather than that it refused the
/// command.
fn server_busy(code: &str) -> bool {
    matches!(
        code,
        "LOADING" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY" | "BUSY" | "NOREPLICAS"
    )
}

fn command(op: &'static str) -> impl FnOnce(RedisError) -> StoreError {
    move |source| RedisStoreError::Command { op, source }.into()
}

/// One connection, to a server or to a cluster; both are multiplexed and
/// cheap to clone.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Sessions in Redis or Redis Cluster. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "mode",
                &match self.conn {
                    Conn::Single(_) => "standalone",
                    Conn::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The compare-and-set: replaces the value if its version is `ARGV[1]`;
/// answers `{status, previous owner}` (0 missing, 1 conflict, 2 saved). The
/// value written carries the write tokens of the value it replaced, but for
/// the oldest, just before its own (see [`value`]'s layout).
///
/// A value that carries this write's token (`ARGV[2]`'s last eight bytes),
/// as its own or among the replaced writes', holds this very write, applied
/// by a first send whose reply was lost: the Cluster client resends a command
/// whose connection dropped, and other processes may have saved on top
/// before the resend arrived. That answers saved, or the caller would apply
/// its change a second time.
///
/// A value of this version whose header deadline is not after `ARGV[4]`
/// (the app server's time, in unix milliseconds) is missing: the store's
/// clock decides whether a session is live, as it does for `load`, not
/// Redis's, which may run behind and keep the key a little longer.
static SAVE: LazyLock<Script> = LazyLock::new(|| Script::new(&save_lua()));

/// [`SAVE`] after raising the owner's index entry (`KEYS[2]`, member
/// `ARGV[5]`), for a standalone server: one round trip, and no save if the
/// index could not be raised.
static SAVE_INDEXED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&(index_lua("KEYS[2]", "ARGV[5]", "ARGV[3]") + &save_lua())));

/// The Lua of [`SAVE`], for values that end with [`value::TOKENS`] tokens.
fn save_lua() -> String {
    let token = value::TOKEN_LEN;
    let trailer = value::TRAILER_LEN;
    format!(
        r"local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' or #cur < {min_len} or string.sub(cur, 9, 16) == {retired} then return {{0, ''}} end
local mine = string.sub(ARGV[2], -{token})
if string.sub(cur, 1, 8) ~= ARGV[1] then
  if #cur >= {min_len} then
    for at = -{trailer}, -{token}, {token} do
      if string.sub(cur, at, at + {token} - 1) == mine then return {{2, ''}} end
    end
  end
  if {expired} then return {{0, ''}} end
  return {{1, ''}}
end
if {expired} then return {{0, ''}} end
local n = string.byte(cur, 17) * 256 + string.byte(cur, 18)
local value = string.sub(ARGV[2], 1, -{trailer} - 1) .. string.sub(cur, -{kept}) .. mine
redis.call('SET', KEYS[1], value, 'PXAT', ARGV[3])
return {{2, string.sub(cur, 19, 18 + n)}}
",
        min_len = 18 + trailer,
        kept = trailer - token,
        retired = RETIRED_LUA,
        expired = expired_lua("cur", "ARGV[4]"),
    )
}

/// A Lua expression: whether the deadline in the header of `value` (at
/// least 16 bytes) is not after `now` (unix milliseconds, as a string). A
/// deadline before 1970 (negative) is past; one read as a double is exact
/// up to the year 287 396.
fn expired_lua(value: &str, now: &str) -> String {
    format!(
        "(function(v) if string.byte(v, 9) >= 128 then return true end local d = 0 for i = 9, 16 do d = d * 256 + string.byte(v, i) end return d <= tonumber({now}) end)({value})"
    )
}

/// [`value::RETIRED`] as a Lua expression.
const RETIRED_LUA: &str = "string.rep('\\0', 8)";

/// Moves the deadline, in the header and for Redis's own expiry, if the
/// version is still `ARGV[3]`, the value was not retired (a missing key
/// reads as an empty string) and its deadline is after `ARGV[4]` (the app
/// server's time, as for [`SAVE`]).
static TOUCH: LazyLock<Script> = LazyLock::new(|| Script::new(&touch_lua()));

/// [`TOUCH`] after raising the owner's index entry (`KEYS[2]`, member
/// `ARGV[5]`), for a standalone server.
static TOUCH_INDEXED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&(index_lua("KEYS[2]", "ARGV[5]", "ARGV[2]") + &touch_lua())));

fn touch_lua() -> String {
    format!(
        r"
local head = redis.pcall('GETRANGE', KEYS[1], 0, 15)
if type(head) ~= 'string' or #head < 16 or string.sub(head, 1, 8) ~= ARGV[3] or string.sub(head, 9, 16) == {RETIRED_LUA} then return 0 end
if {expired} then return 0 end
if redis.call('STRLEN', KEYS[1]) < {min_len} then return 0 end
redis.call('SETRANGE', KEYS[1], 8, ARGV[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
",
        min_len = 18 + value::TRAILER_LEN,
        expired = expired_lua("head", "ARGV[4]"),
    )
}

/// Retires the value at version `ARGV[1]` (how a rotation ends its old
/// record): its header deadline becomes [`value::RETIRED`], its last eight
/// bytes this touch's token `ARGV[2]`, and it stays `ARGV[3]` ms. A value
/// already retired answers 1 if it was by this very touch (sent again by
/// the Cluster client after its connection dropped before the reply, or
/// the rotation would conclude that another request ended the session), 0
/// if by another.
static RETIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local head = redis.pcall('GETRANGE', KEYS[1], 0, 15)
if type(head) ~= 'string' or string.sub(head, 1, 8) ~= ARGV[1] then return 0 end
local len = redis.call('STRLEN', KEYS[1])
if len < 24 then return 0 end
if string.sub(head, 9, 16) == {RETIRED_LUA} then
  if redis.call('GETRANGE', KEYS[1], len - 8, len - 1) == ARGV[2] then return 1 end
  return 0
end
redis.call('SETRANGE', KEYS[1], 8, {RETIRED_LUA})
redis.call('SETRANGE', KEYS[1], len - 8, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"
    ))
});

/// `SET NX PXAT` of the value `ARGV[1]` until `ARGV[2]` after raising the
/// owner's index entry (`KEYS[2]`, member `ARGV[3]`), for a standalone
/// server.
static CREATE_INDEXED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(index_lua("KEYS[2]", "ARGV[3]", "ARGV[2]")
            + "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PXAT', ARGV[2])\n"),
    )
});

/// Deletes the session if its owner is `ARGV[1]` (1, or 0 when its deadline
/// is not after `ARGV[2]`, the app server's time: expired, so not counted);
/// a key that holds no session value, or another owner's, is left alone (0);
/// no key at all, or a retired value (deleted here), is -1 (perhaps a create in flight, whose
/// index entry must stay, or a rotation whose successor a new listing
/// finds).
static DELETE_IF_OWNER: LazyLock<Script> = LazyLock::new(|| {
    let expired = expired_lua("cur", "ARGV[2]");
    Script::new(&format!(
        r"
local cur = redis.pcall('GET', KEYS[1])
if not cur then return -1 end
if type(cur) ~= 'string' or #cur < 18 then return 0 end
if string.sub(cur, 9, 16) == {RETIRED_LUA} then
  redis.call('DEL', KEYS[1])
  return -1
end
local n = string.byte(cur, 17) * 256 + string.byte(cur, 18)
if string.sub(cur, 19, 18 + n) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if {expired} then return 0 end
return 1
"
    ))
});

/// Removes `ARGV[2]`'s entry from the owner `ARGV[1]`'s index (`KEYS[1]`)
/// unless the session (`KEYS[2]`) names that owner again: a write since
/// (a save that gave the session back to the owner) raised the entry that
/// this removal, answering an earlier write, would otherwise take away.
/// For a standalone server; a retired value names no one.
static UNINDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local cur = redis.pcall('GET', KEYS[2])
if type(cur) == 'string' and #cur >= 18 and string.sub(cur, 9, 16) ~= {RETIRED_LUA} then
  local n = string.byte(cur, 17) * 256 + string.byte(cur, 18)
  if string.sub(cur, 19, 18 + n) == ARGV[1] then return 0 end
end
return redis.call('ZREM', KEYS[1], ARGV[2])
"
    ))
});

/// Raises one entry of an owner's index (`ARGV[1]`) to `ARGV[2]`, drops
/// entries whose deadline passed, and lets the index expire with its last
/// session.
static INDEX: LazyLock<Script> =
    LazyLock::new(|| Script::new(&(index_lua("KEYS[1]", "ARGV[1]", "ARGV[2]") + "return 1\n")));

/// The Lua that raises `member`'s entry in the index `key` to `score` (`ZADD
/// GT`: entries only ever rise, so each holds an upper bound of its
/// session's deadline), drops the entries whose score has passed by the
/// Redis server's clock (`TIME`: not the app server's, whose clock may run
/// ahead and drop entries of sessions still live, which a logout everywhere
/// would then miss), and lets the index expire with its last session. On its
/// own in [`INDEX`], and ahead of the write in the standalone scripts that
/// index and write in one step.
fn index_lua(key: &str, member: &str, score: &str) -> String {
    format!(
        "local index_time = redis.call('TIME')
local index_now = tonumber(index_time[1]) * 1000 + math.floor(tonumber(index_time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', {key}, '-inf', index_now)
redis.call('ZADD', {key}, 'GT', {score}, {member})
local top = redis.call('ZRANGE', {key}, -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', {key}, top[2]) end
"
    )
}

/// The connection settings of [`RedisStore::connect`] and
/// [`RedisStore::connect_lazy`]: a 5 s connection timeout, two retries of a
/// failed connection at most 500 ms apart, and no response timeout. Start from
/// them when building your own manager for
/// [`RedisStore::from_connection_manager`].
///
/// The manager's store timeout
/// ([`ConfigBuilder::with_store_timeout`](session_core::ConfigBuilder::with_store_timeout))
/// bounds every call already. A response timeout of the connection's own
/// would add nothing to that: its expiry does not make the `redis` crate
/// reconnect (a timed-out reply is not a dropped connection to it), and a
/// late reply is discarded either way. It would cost a timer per command,
/// armed and cancelled on every request. Calls made on the store directly,
/// outside a manager, have no deadline then: wrap them in
/// `tokio::time::timeout`.
///
/// ```no_run
/// # async fn demo() -> redis::RedisResult<()> {
/// use redis::aio::ConnectionManager;
/// use session_redis::{manager_config, RedisStore};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let manager = ConnectionManager::new_with_config(client, manager_config()).await?;
/// let store = RedisStore::from_connection_manager(manager);
/// # Ok(()) }
/// ```
///
/// The connections' TCP settings are the client's: see [`tcp_settings`]
/// for the ones [`RedisStore::connect`] gives them.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(None)
        .set_number_of_retries(2)
        .set_max_delay(std::time::Duration::from_millis(500))
}

/// The TCP settings of the connections [`RedisStore`]'s constructors make
/// (they replace a given client's):
///
/// * `TCP_NODELAY`: each command leaves at once. The `redis` crate leaves
///   Nagle's algorithm on, which may hold a command back while an earlier
///   one is unacknowledged.
/// * on Linux (and Android, Fuchsia): keepalive probes after 30 s without
///   traffic, three of them 10 s apart, so that a NAT or load balancer
///   between the app and Redis keeps an idle connection open; and
///   `TCP_USER_TIMEOUT` of [`DEAD_CONNECTION_AFTER`]: a connection whose
///   sent data or keepalive probes go unanswered that long (its host gone
///   without a reset: a failover that took the address away, a dropped NAT
///   flow) is closed, and the next call reconnects. Without it the kernel
///   retransmits for about a quarter of an hour, and every call until then
///   ends in the manager's store timeout. The timeout outlasts the three
///   probes, so one lost probe does not close an idle connection. A Redis
///   that stops reading for as long (a script or a fork blocking it for a
///   minute) once the connection has filled its receive buffer is cut too,
///   long after the calls waiting on it timed out.
///
/// ```
/// let settings = session_redis::tcp_settings();
/// assert!(settings.nodelay());
/// ```
pub fn tcp_settings() -> TcpSettings {
    let settings = TcpSettings::default().set_nodelay(true);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(std::time::Duration::from_secs(30))
            .with_interval(std::time::Duration::from_secs(10))
            .with_retries(3);
        settings
            .set_keepalive(keepalive)
            .set_user_timeout(DEAD_CONNECTION_AFTER)
    };
    settings
}

/// How long a connection's sent data or keepalive probes may go
/// unanswered before the connection counts as dead, on Linux (see
/// [`tcp_settings`]): longer than the keepalive probes take.
pub const DEAD_CONNECTION_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// `client` with the store's TCP settings.
fn with_tcp_settings(client: &redis::Client) -> Result<redis::Client, RedisStoreError> {
    let info = client.get_connection_info().clone();
    redis::Client::open(info.set_tcp_settings(tcp_settings())).map_err(RedisStoreError::Config)
}

impl RedisStore {
    /// Connects to one Redis server. The connection is multiplexed and
    /// reconnects by itself when Redis comes back after a failure.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a bad URL,
    /// [`RedisStoreError::Connect`] when Redis does not answer.
    pub async fn connect(url: &str) -> Result<Self, RedisStoreError> {
        let client = redis::Client::open(url).map_err(RedisStoreError::Config)?;
        Self::connect_client(client).await
    }

    /// Like [`connect`](Self::connect), through a [`redis::Client`] built
    /// by the caller: TLS that trusts a private certificate authority or
    /// presents a client certificate ([`redis::Client::build_with_tls`],
    /// feature `tls-rustls`), or connection details a URL cannot carry. The
    /// store's own connection settings (timeouts, reconnection, and the
    /// [`tcp_settings`], which replace the client's) still apply.
    /// (The `redis` crate loads the system's roots even when it is given a
    /// root certificate, and fails the connection when that load reports an
    /// error, such as an `SSL_CERT_FILE` that names a missing file.)
    ///
    /// ```no_run
    /// # #[cfg(feature = "tls-rustls")]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redis::{Client, TlsCertificates};
    /// use session_redis::RedisStore;
    ///
    /// let ca = std::fs::read("/etc/myapp/redis-ca.pem")?;
    /// let client = Client::build_with_tls(
    ///     "rediss://redis.internal:6380",
    ///     TlsCertificates { client_tls: None, root_cert: Some(ca) },
    /// )?;
    /// let store = RedisStore::connect_client(client).await?;
    /// # let _ = store; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RedisStoreError::Connect`] when Redis does not answer or the TLS
    /// handshake fails.
    pub async fn connect_client(client: redis::Client) -> Result<Self, RedisStoreError> {
        let client = with_tcp_settings(&client)?;
        let manager = ConnectionManager::new_with_config(client, manager_config())
            .await
            .map_err(RedisStoreError::Connect)?;
        Ok(Self::from_connection_manager(manager))
    }

    /// Like [`connect`](Self::connect), but returns at once without a round
    /// trip: the connection is made on first use (a Redis that is down then
    /// shows as a failed request, not as a failed start), and its I/O task
    /// runs on the Tokio runtime this is called from.
    ///
    /// That makes it the way to give each worker thread its own connection
    /// where a framework runs one single-threaded runtime per worker, as
    /// actix-web does: build the store, and the manager over it, inside the
    /// `HttpServer::new` closure. A store connected in `main` keeps its I/O
    /// task on the main thread instead, and every request of every worker
    /// then crosses threads twice to reach Redis (BENCHMARKS.md measures the
    /// difference).
    ///
    /// ```no_run
    /// # fn run() -> Result<(), session_redis::RedisStoreError> {
    /// use session_core::{Config, Manager};
    /// use session_redis::RedisStore;
    ///
    /// // Inside a Tokio runtime, e.g. an actix-web worker's app factory:
    /// let store = RedisStore::connect_lazy("redis://127.0.0.1:6379")?;
    /// let manager = Manager::new(store, Config::default());
    /// # let _ = manager; Ok(()) }
    /// ```
    ///
    /// A connection that Redis refuses for good (a wrong password) is not
    /// tried again: requests fail until the process restarts with the right
    /// settings. One refused for a while (Redis down or restarting) is.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for a bad URL, or when called outside a
    /// Tokio runtime.
    pub fn connect_lazy(url: &str) -> Result<Self, RedisStoreError> {
        let client = redis::Client::open(url).map_err(RedisStoreError::Config)?;
        let client = with_tcp_settings(&client)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisStoreError::Config(RedisError::from((
                redis::ErrorKind::Client,
                "RedisStore::connect_lazy must be called inside a Tokio runtime",
            ))));
        }
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config())
            .map_err(RedisStoreError::Config)?;
        Ok(Self::from_connection_manager(manager))
    }

    /// Connects to a Redis Cluster through any of its nodes.
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for bad URLs,
    /// [`RedisStoreError::Connect`] when no node answers.
    pub async fn connect_cluster<I, T>(nodes: I) -> Result<Self, RedisStoreError>
    where
        I: IntoIterator<Item = T>,
        T: redis::IntoConnectionInfo,
    {
        Self::connect_cluster_builder(redis::cluster::ClusterClient::builder(nodes)).await
    }

    /// Connects to a Redis Cluster through a client builder of your own:
    /// for `rediss://` nodes under a private certificate authority or with a
    /// client certificate (`ClusterClientBuilder::certs`, feature
    /// `tls-rustls`), a password, or other settings the node URLs cannot
    /// carry. The store's timeouts, retries and [`tcp_settings`] replace the
    /// builder's (as [`connect_cluster`](Self::connect_cluster) sets them).
    /// Leave `read_from_replicas` off: a replica that lags its primary would
    /// still load a session just destroyed or logged out everywhere.
    ///
    /// ```no_run
    /// # #[cfg(feature = "tls-rustls")]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redis::cluster::ClusterClient;
    /// use redis::TlsCertificates;
    /// use session_redis::RedisStore;
    ///
    /// let ca = std::fs::read("/etc/myapp/redis-ca.pem")?;
    /// let builder = ClusterClient::builder(["rediss://redis-1.internal:6380"])
    ///     .certs(TlsCertificates { client_tls: None, root_cert: Some(ca) });
    /// let store = RedisStore::connect_cluster_builder(builder).await?;
    /// # let _ = store; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RedisStoreError::Config`] for bad settings,
    /// [`RedisStoreError::Connect`] when no node answers or the TLS
    /// handshake fails.
    pub async fn connect_cluster_builder(
        builder: redis::cluster::ClusterClientBuilder,
    ) -> Result<Self, RedisStoreError> {
        let client = builder
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
            .max_retry_wait(CLUSTER_MAX_RETRY_WAIT_MS)
            .tcp_settings(tcp_settings())
            .build()
            .map_err(RedisStoreError::Config)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(RedisStoreError::Connect)?;
        Ok(Self::from_cluster_connection(conn))
    }

    /// A store over an existing connection manager.
    pub fn from_connection_manager(manager: ConnectionManager) -> Self {
        Self {
            conn: Conn::Single(manager),
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// A store over an existing cluster connection.
    pub fn from_cluster_connection(conn: ClusterConnection) -> Self {
        Self {
            conn: Conn::Cluster(conn),
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Keys start with `prefix` (default [`DEFAULT_PREFIX`]), so several
    /// applications can share one Redis.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, id: &RecordId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 64);
        key.push_str(&self.prefix);
        id.push_hex(&mut key);
        key
    }

    fn owner_key(&self, owner: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 6 + 64);
        key.push_str(&self.prefix);
        key.push_str("owner:");
        for b in Sha256::digest(owner.as_bytes()) {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }

    /// Whether a write raises its owner's index entry in its own script: on
    /// a standalone server both keys live on the one node (one round trip,
    /// atomic); on a Cluster they may not, and the entry is raised first with
    /// [`index`](Self::index).
    fn indexes_inline(&self) -> bool {
        matches!(self.conn, Conn::Single(_))
    }

    /// Adds what the `*_INDEXED` scripts take after the write's own keys and
    /// arguments: `owner`'s index and `id`'s entry.
    fn index_args(&self, invocation: &mut ScriptInvocation<'_>, owner: &str, id: &RecordId) {
        invocation.key(self.owner_key(owner)).arg(id.to_string());
    }

    /// Raises `id`'s entry in `owner`'s index to `expires_at`.
    async fn index(&self, owner: &str, id: &RecordId, expires_at: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = INDEX
            .key(self.owner_key(owner))
            .arg(id.to_string())
            .arg(expires_at)
            .invoke_async(&mut conn)
            .await
            .map_err(command("index owner"))?;
        Ok(())
    }

    /// Removes `id`'s entry from `owner`'s index, after a write that took
    /// the record from that owner. The write is made either way: a failure is
    /// logged, not returned (the caller would think the write undone, and a
    /// login would keep its retired id), and the entry then lapses at its
    /// deadline, as listings check each record.
    async fn unindex(&self, owner: &str, id: &RecordId) {
        let mut conn = self.conn.clone();
        let removed: Result<i64, RedisError> = if self.indexes_inline() {
            (UNINDEX.key(self.owner_key(owner)).key(self.key(id)))
                .arg(owner)
                .arg(id.to_string())
                .invoke_async(&mut conn)
                .await
        } else {
            // On a Cluster the two keys live apart: a save that gives the
            // session back to `owner` while this is on its way can lose its
            // entry (see the crate's notes on the index's durability).
            redis::cmd("ZREM")
                .arg(self.owner_key(owner))
                .arg(id.to_string())
                .query_async(&mut conn)
                .await
        };
        if let Err(error) = removed {
            tracing::warn!(id = %id.short(), %error, "could not remove a session's owner index entry; it lapses at its deadline");
        }
    }

    /// The value under `id`'s key; a key holding something else than a
    /// string (not written by this release) is no session.
    async fn fetch(&self, id: &RecordId, op: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key(id);
        // Sized up front: building the command reallocates nothing.
        let mut cmd = redis::Cmd::with_capacity(2, 3 + key.len());
        no_string_is_no_session(cmd.arg("GET").arg(key).query_async(&mut conn).await, id, op)
    }

    /// The head of a stored value, as far as an owner of `owner_len` bytes
    /// reaches: enough to tell whether it is live and whom it belongs to
    /// ([`value::is_live_at`], [`value::owner`]), for an owner's listing,
    /// which would otherwise hold every one of the owner's records in memory
    /// at once. Empty when the key is missing; `None` when it holds no
    /// string.
    async fn fetch_head(
        &self,
        id: &RecordId,
        owner_len: usize,
        op: &'static str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        // `GETRANGE`'s end is inclusive.
        let end = value::head_len(owner_len) - 1;
        let head = redis::cmd("GETRANGE")
            .arg(self.key(id))
            .arg(0)
            .arg(end)
            .query_async(&mut conn)
            .await;
        no_string_is_no_session(head.map(Some), id, op)
    }

    /// [`Store::create`] of `data`, the encoded `record` (see
    /// [`save_value`](Self::save_value)).
    async fn create_value(&self, record: &Record, data: Vec<u8>) -> Result<Created, StoreError> {
        let expires = pxat(record.expires_at);
        let mut conn = self.conn.clone();
        let key = self.key(&record.id);
        // An index entry without a record is harmless, a live record missing
        // from its owner's index is not (logging the owner out everywhere
        // would miss it): the entry is raised before the write, and no write
        // is made if it could not be.
        let reply = match record.owner.as_deref() {
            Some(owner) if self.indexes_inline() => {
                let mut invocation = CREATE_INDEXED.key(key);
                invocation.arg(&data).arg(expires);
                self.index_args(&mut invocation, owner, &record.id);
                invocation.invoke_async::<Value>(&mut conn).await
            }
            owner => {
                if let Some(owner) = owner {
                    self.index(owner, &record.id, expires).await?;
                }
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(&data).arg("NX").arg("PXAT").arg(expires);
                cmd.query_async::<Value>(&mut conn).await
            }
        }
        .map_err(command("create"))?;
        // `NX`: nil when the key exists. With 256-bit ids, a value with this
        // write's token is this very write, resent by the Cluster client
        // after its connection dropped before the reply; anything else there
        // is another session.
        if reply != Value::Nil {
            return Ok(Created::Created);
        }
        let there = self.fetch(&record.id, "create").await?;
        Ok(match there {
            Some(v) if value::same_write(&v, &data) => Created::Created,
            _ => Created::IdTaken,
        })
    }

    /// [`Store::save`] of `data`, the encoded `record`: separate so that a
    /// test can send the very same value twice, as a resending client does.
    async fn save_value(
        &self,
        record: &Record,
        expected_version: u64,
        data: Vec<u8>,
    ) -> Result<Saved, StoreError> {
        let expires = pxat(record.expires_at);
        let mut conn = self.conn.clone();
        let owner = record.owner.as_deref();
        let inline = owner.is_some() && self.indexes_inline();
        let mut invocation = if inline { &SAVE_INDEXED } else { &SAVE }.key(self.key(&record.id));
        invocation
            .arg(&value::version_bytes(expected_version)[..])
            .arg(data)
            .arg(expires);
        // Index first, as in `create_value`; the time after that round trip.
        match owner {
            Some(owner) if inline => {
                invocation.arg(Timestamp::now().unix_millis());
                self.index_args(&mut invocation, owner, &record.id);
            }
            Some(owner) => {
                self.index(owner, &record.id, expires).await?;
                invocation.arg(Timestamp::now().unix_millis());
            }
            None => drop(invocation.arg(Timestamp::now().unix_millis())),
        }
        let (status, old_owner) = invocation
            .invoke_async::<(i64, Vec<u8>)>(&mut conn)
            .await
            .map_err(command("save"))?;
        match status {
            0 => Ok(Saved::Missing),
            1 => Ok(Saved::Conflict),
            _ => {
                // The previous owner is raw bytes from the value: one that is
                // not UTF-8 was never indexed by this store.
                if let Ok(old_owner) = std::str::from_utf8(&old_owner) {
                    if !old_owner.is_empty() && record.owner.as_deref() != Some(old_owner) {
                        self.unindex(old_owner, &record.id).await;
                    }
                }
                Ok(Saved::Saved)
            }
        }
    }
}

impl RedisStore {
    /// [`Store::touch`] to a deadline already past, with this call's write
    /// `token` (separate so that a test can send the very same touch twice,
    /// as a resending client does): see [`RETIRE`]. The session's index
    /// entry goes with it, as a delete's does.
    async fn retire(
        &self,
        id: &RecordId,
        version: u64,
        owner: Option<&str>,
        token: [u8; value::TOKEN_LEN],
    ) -> Result<bool, StoreError> {
        let retired: i64 = RETIRE
            .key(self.key(id))
            .arg(&value::version_bytes(version)[..])
            .arg(&token[..])
            .arg(value::RETIRED_FOR_MS)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(command("touch"))?;
        let retired = retired == 1;
        if retired {
            if let Some(owner) = owner {
                self.unindex(owner, id).await;
            }
        }
        Ok(retired)
    }
}

fn is_wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

/// A read of session key `id`'s value: a key of another type (an older
/// release's hash, another program's) is no session, logged.
fn no_string_is_no_session(
    reply: redis::RedisResult<Option<Vec<u8>>>,
    id: &RecordId,
    op: &'static str,
) -> Result<Option<Vec<u8>>, StoreError> {
    match reply {
        Ok(value) => Ok(value),
        Err(e) if is_wrong_type(&e) => {
            tracing::warn!(id = %id.short(), "session key holds no string; treating it as no session");
            Ok(None)
        }
        Err(e) => Err(command(op)(e)),
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        Ok(self
            .fetch(id, "load")
            .await?
            .and_then(|v| value::decode(id, &v, Timestamp::now().unix_millis())))
    }

    async fn create(&self, record: &Record) -> Result<Created, StoreError> {
        self.create_value(record, value::encode(record)?).await
    }

    async fn save(&self, record: &Record, expected_version: u64) -> Result<Saved, StoreError> {
        self.save_value(record, expected_version, value::encode(record)?)
            .await
    }

    async fn touch(
        &self,
        id: &RecordId,
        version: u64,
        owner: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let expires = expires_at.unix_millis();
        if expires <= Timestamp::now().unix_millis() {
            // A deadline already past: how a rotation retires its old record.
            return self.retire(id, version, owner, value::token()).await;
        }
        let mut conn = self.conn.clone();
        let inline = owner.is_some() && self.indexes_inline();
        let mut invocation = if inline { &TOUCH_INDEXED } else { &TOUCH }.key(self.key(id));
        invocation
            .arg(&value::deadline_bytes(expires_at)[..])
            .arg(expires)
            .arg(&value::version_bytes(version)[..]);
        // Index first, as in `create_value`; the time after that round trip.
        match owner {
            Some(owner) if inline => {
                invocation.arg(Timestamp::now().unix_millis());
                self.index_args(&mut invocation, owner, id);
            }
            Some(owner) => {
                self.index(owner, id, expires).await?;
                invocation.arg(Timestamp::now().unix_millis());
            }
            None => drop(invocation.arg(Timestamp::now().unix_millis())),
        }
        let touched: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(command("touch"))?;
        Ok(touched == 1)
    }

    async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key(id);
        let removed: Option<Vec<u8>> =
            match redis::cmd("GETDEL").arg(&key).query_async(&mut conn).await {
                Ok(removed) => removed,
                // Not a session this release wrote: remove it all the same.
                Err(e) if is_wrong_type(&e) => {
                    let _: i64 = redis::cmd("DEL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .map_err(command("delete"))?;
                    None
                }
                Err(e) => return Err(command("delete")(e)),
            };
        if let Some(owner) = removed.as_deref().and_then(value::owner) {
            self.unindex(&owner, id).await;
        }
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        // Redis expires keys by itself.
        Ok(0)
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut deleted = 0;
        match &self.conn {
            Conn::Single(_) => {
                let mut conn = self.conn.clone();
                let mut cursor = 0;
                loop {
                    let (next, keys): (u64, Vec<Vec<u8>>) = self
                        .scan_page(cursor)
                        .query_async(&mut conn)
                        .await
                        .map_err(command("delete all"))?;
                    deleted += self.delete_keys(keys).await?;
                    if next == 0 {
                        return Ok(deleted);
                    }
                    cursor = next;
                }
            }
            Conn::Cluster(cluster) => {
                // Every primary's keys, each scanned on its node: a Cluster's
                // `SCAN` is a node's. The first page comes from all of them
                // at once, with their addresses.
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo,
                };
                let mut cluster = cluster.clone();
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let first = cluster
                    .route_command(self.scan_page(0), all)
                    .await
                    .map_err(command("delete all"))?;
                let Value::Map(nodes) = first else {
                    return Err(command("delete all")(RedisError::from((
                        redis::ErrorKind::Client,
                        "the Cluster's primaries answered SCAN with something else than a map",
                    ))));
                };
                for (address, page) in nodes {
                    let address: String = redis::from_redis_value(address)
                        .map_err(|e| command("delete all")(e.into()))?;
                    let Some((host, port)) = address
                        .rsplit_once(':')
                        .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)))
                    else {
                        return Err(command("delete all")(RedisError::from((
                            redis::ErrorKind::Client,
                            "a Cluster node address without a port",
                            address,
                        ))));
                    };
                    let node =
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                    let mut page = page;
                    loop {
                        let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(page)
                            .map_err(|e| command("delete all")(e.into()))?;
                        deleted += self.delete_keys(keys).await?;
                        if next == 0 {
                            break;
                        }
                        page = cluster
                            .route_command(self.scan_page(next), node.clone())
                            .await
                            .map_err(command("delete all"))?;
                    }
                }
                Ok(deleted)
            }
        }
    }

    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        // Every entry: the records decide, and an app server's clock that runs
        // ahead must not hide sessions still live.
        let ids = self.owner_entries(owner).await?;
        // The index holds upper bounds; the records decide. An entry whose
        // record is missing or names another owner (or none) is left alone:
        // it may belong to a create or a login's save on its way (each raises
        // the entry before it writes, and on a Cluster the two keys live on
        // different nodes), and removing it would hide that session from its
        // owner's logout. Such entries leave the index at their deadline.
        // Made before the first is awaited: a closure kept across the wait
        // would make this future's `Send` depend on a borrow's lifetime.
        // Only each value's head is read: an owner may have thousands of
        // sessions, each as large as its data.
        let checks: Vec<_> = ids
            .iter()
            .map(|id| self.fetch_head(id, owner.len(), "read owner"))
            .collect();
        let checks = in_turns(checks).await;
        // Live by the app server's clock, as `load` decides (a retired value
        // is past too), not by Redis's keeping the key.
        let now = Timestamp::now().unix_millis();
        let mut live = Vec::with_capacity(ids.len());
        for (id, found) in ids.into_iter().zip(checks) {
            if found?.is_some_and(|v| {
                value::is_live_at(&v, now) && value::owner(&v).as_deref() == Some(owner)
            }) {
                live.push(id);
            }
        }
        Ok(live)
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
        self.delete_owner_listed(owner, || async {}).await
    }
}

/// A deadline as Redis's `PXAT` takes it: Redis refuses one at or before
/// the epoch, and any instant in the past expires the key alike.
fn pxat(deadline: Timestamp) -> i64 {
    deadline.unix_millis().max(1)
}

/// How many commands of one owner's listing or "log out everywhere" are in
/// flight at once. An owner can have thousands of sessions (a client that
/// logs in on every call and keeps no cookie): sent all at once, they would
/// queue on the shared connection ahead of every other request's command.
const OWNER_CALLS_IN_FLIGHT: usize = 32;

/// Runs `calls` with at most [`OWNER_CALLS_IN_FLIGHT`] in flight, and
/// answers in their order. The next call starts when any has answered, not
/// the oldest: one slow call does not hold up the rest (though the calls of
/// one slow Cluster node, once they fill every slot, set the pace).
async fn in_turns<F: Future>(calls: Vec<F>) -> Vec<F::Output> {
    let mut answers: Vec<(usize, F::Output)> = stream::iter(calls.into_iter().enumerate())
        .map(|(i, call)| async move { (i, call.await) })
        .buffer_unordered(OWNER_CALLS_IN_FLIGHT)
        .collect()
        .await;
    answers.sort_unstable_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// `text` with the characters `SCAN`'s `MATCH` gives a meaning to escaped,
/// so that a key prefix matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How many times [`RedisStore`]'s `delete_owner` lists the owner's index at
/// most: again after every round that found a listed record gone, since a
/// rotation that retired it may have added its successor after the listing.
const OWNER_ROUNDS: usize = 8;

impl RedisStore {
    /// One page of the keys under this store's prefix, from `cursor`.
    fn scan_page(&self, cursor: u64) -> Cmd {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", glob_escape(&self.prefix)))
            .arg("COUNT")
            .arg(1000)
            // Sessions are strings: another store's owner index (a sorted
            // set) can look like one of this store's session keys when this
            // store's prefix is the other's followed by `owner:`.
            .arg("TYPE")
            .arg("string");
        cmd
    }

    /// Deletes those of `keys` that are this store's sessions, and returns
    /// how many went. Owner indexes stay: deleting one whole could drop the
    /// entry of a session created meanwhile, which would then hide from its
    /// owner's listing; their entries of deleted sessions are pruned as any
    /// stale entry is, and the index expires with its last deadline. Other
    /// keys under the prefix are left alone. On a standalone server, one
    /// `UNLINK` per page; on a Cluster, whose keys live in different slots,
    /// one per key, a few at a time.
    async fn delete_keys(&self, keys: Vec<Vec<u8>>) -> Result<u64, StoreError> {
        let sessions: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|key| {
                key.get(self.prefix.len()..).is_some_and(|rest| {
                    rest.len() == 64 && rest.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                })
            })
            .collect();
        if sessions.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        if let Conn::Single(_) = self.conn {
            let removed: u64 = redis::cmd("UNLINK")
                .arg(sessions)
                .query_async(&mut conn)
                .await
                .map_err(command("delete all"))?;
            return Ok(removed);
        }
        let calls = sessions.into_iter().map(|key| {
            let mut conn = conn.clone();
            async move {
                redis::cmd("UNLINK")
                    .arg(key)
                    .query_async::<u64>(&mut conn)
                    .await
            }
        });
        let mut n = 0;
        for answer in in_turns(calls.collect()).await {
            n += answer.map_err(command("delete all"))?;
        }
        Ok(n)
    }

    /// The owner's index entries, as ids. A member that is not an id (not
    /// even UTF-8: written by something else) is skipped, so that it cannot
    /// keep the owner's sessions from being listed or ended.
    async fn owner_entries(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        let members: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(self.owner_key(owner))
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(command("list owner"))?;
        Ok(members
            .iter()
            .filter_map(|m| RecordId::parse(std::str::from_utf8(m).ok()?).ok())
            .collect())
    }

    /// `delete_owner`, with `after_listing` run once after the first listing
    /// (tests put a rotation there).
    ///
    /// The listing and the deletes are separate commands, so a session that
    /// rotates meanwhile adds its new record's entry after the listing and
    /// retires the listed record before its delete: the delete finds nothing.
    /// A round in which a listed record was gone therefore lists again and
    /// deletes what is new; the successor's entry is raised before its
    /// predecessor is retired, so the next listing has it.
    async fn delete_owner_listed<F, Fut>(
        &self,
        owner: &str,
        after_listing: F,
    ) -> Result<u64, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut handled = std::collections::HashSet::new();
        let mut after_listing = Some(after_listing);
        let mut n = 0;
        for _ in 0..OWNER_ROUNDS {
            let mut ids = self.owner_entries(owner).await?;
            ids.retain(|id| handled.insert(*id));
            if let Some(hook) = after_listing.take() {
                hook().await;
            }
            if ids.is_empty() {
                break;
            }
            let deletions: Vec<_> = ids
                .iter()
                .map(|id| {
                    let mut conn = self.conn.clone();
                    let key = self.key(id);
                    async move {
                        DELETE_IF_OWNER
                            .key(key)
                            .arg(owner)
                            .arg(Timestamp::now().unix_millis())
                            .invoke_async::<i64>(&mut conn)
                            .await
                            .map_err(command("delete owner"))
                    }
                })
                .collect();
            let deletions = in_turns(deletions).await;
            // The entries stay, to leave at their deadline: a missing record
            // or another owner's may be a create or a login's save on its way
            // (see `ids_of_owner`), and even the entry of a record deleted
            // here may still be needed, should the Cluster client resend that
            // record's create after this delete.
            let mut gone = false;
            for deleted in deletions {
                match deleted? {
                    1 => n += 1,
                    -1 => gone = true,
                    _ => {}
                }
            }
            if !gone {
                break;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each failure is reported as what it is: an unreadable reply as
    /// corrupted data, a refused password as a refusal, a dropped
    /// connection or a timeout as Redis being unavailable.
    #[test]
    fn command_errors_are_classified_by_what_went_wrong() {
        let kind = |source: RedisError| {
            StoreError::from(RedisStoreError::Command { op: "load", source }).kind()
        };
        let unreadable = redis::ParsingError::from("expected bytes, got an integer");
        assert_eq!(kind(unreadable.into()), StoreErrorKind::Corrupted);
        assert_eq!(
            kind((redis::ErrorKind::UnexpectedReturnType, "type").into()),
            StoreErrorKind::Corrupted
        );
        assert_eq!(
            kind((redis::ErrorKind::AuthenticationFailed, "WRONGPASS").into()),
            StoreErrorKind::Rejected
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(kind(refused.into()), StoreErrorKind::Unavailable);
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert_eq!(kind(timed_out.into()), StoreErrorKind::Unavailable);
        assert_eq!(
            kind((redis::ErrorKind::Client, "bad argument").into()),
            StoreErrorKind::Rejected
        );
        let connect = |e: RedisError| StoreError::from(RedisStoreError::Connect(e)).kind();
        assert_eq!(
            connect((redis::ErrorKind::AuthenticationFailed, "WRONGPASS").into()),
            StoreErrorKind::Rejected
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(connect(refused.into()), StoreErrorKind::Unavailable);
    }

    /// A store on `REDIS_URL` under a prefix of its own; without a server,
    /// `None` and a loud SKIPPED, except in CI, where that fails. Keys left
    /// by a failing test expire with their sessions.
    async fn store() -> Option<RedisStore> {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let what = format!("Redis at {url} (REDIS_URL)");
        connected(
            &what,
            RedisStore::connect(&url).await.map_err(|e| e.to_string()),
        )
    }

    /// The same on the Cluster at `REDIS_CLUSTER_URLS`, which `cargo xtask
    /// test` starts.
    async fn cluster_store() -> Option<RedisStore> {
        let urls = std::env::var("REDIS_CLUSTER_URLS").unwrap_or_default();
        let what = format!("a Redis Cluster at {urls:?} (REDIS_CLUSTER_URLS)");
        let nodes: Vec<&str> = urls.split(',').filter(|u| !u.is_empty()).collect();
        if nodes.is_empty() {
            return connected(&what, Err("not set".into()));
        }
        let store = RedisStore::connect_cluster(nodes).await;
        connected(&what, store.map_err(|e| e.to_string()))
    }

    fn connected(what: &str, store: Result<RedisStore, String>) -> Option<RedisStore> {
        match store {
            Ok(store) => {
                let id = session_core::Id::generate().expect("OS random source");
                let mut prefix = String::from("unit-");
                id.record_id().push_hex(&mut prefix);
                prefix.truncate(17);
                prefix.push(':');
                Some(store.with_prefix(prefix))
            }
            Err(e) => {
                session_core::testing::skip(&format!(
                    "{what} is not available ({e}); install redis-server (apt-get install redis-server) or point the variable at a server"
                ));
                None
            }
        }
    }

    /// Deletes `owner`'s index, which outlives the sessions a test deleted
    /// until their deadlines.
    async fn forget(store: &RedisStore, owner: &str) {
        let (): () = redis::cmd("DEL")
            .arg(store.owner_key(owner))
            .query_async(&mut store.conn.clone())
            .await
            .expect("clean up");
    }

    /// An owner's calls go out a bounded number at a time, a slow one does
    /// not hold up the others, and they answer in their order.
    #[tokio::test]
    async fn an_owners_calls_are_in_flight_a_few_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let (slow_tx, slow_rx) = tokio::sync::oneshot::channel::<()>();
        let mut slow_rx = Some(slow_rx);
        let done = AtomicUsize::new(0);
        let calls = (0..200).map(|i| {
            let (now, most, done) = (&now, &most, &done);
            let mut slow = if i == 0 { slow_rx.take() } else { None };
            async move {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                match slow.take() {
                    // The first call answers only once all the others have.
                    Some(rx) => rx.await.unwrap(),
                    None => tokio::task::yield_now().await,
                }
                now.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
                i
            }
        });
        let calls: Vec<_> = calls.collect();
        let release = async {
            for _ in 0..10_000 {
                if done.load(Ordering::SeqCst) == 199 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let before_the_slow_one = done.load(Ordering::SeqCst);
            slow_tx.send(()).unwrap();
            before_the_slow_one
        };
        let (answers, before_the_slow_one) = tokio::join!(in_turns(calls), release);
        assert_eq!(before_the_slow_one, 199, "the slow call held up the rest");
        assert_eq!(answers, (0..200).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), OWNER_CALLS_IN_FLIGHT);
    }

    /// The clients the constructors connect with send each command at once,
    /// probe an idle connection and give up on one whose data goes
    /// unacknowledged, wherever the client came from.
    #[test]
    fn connections_get_the_stores_tcp_settings() {
        let given = redis::Client::open("redis://:secret@redis.internal:6380/3").unwrap();
        assert!(!given.get_connection_info().tcp_settings().nodelay());
        let client = with_tcp_settings(&given).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.addr(), given.get_connection_info().addr());
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().password(), Some("secret"));
        let tcp = info.tcp_settings();
        assert!(tcp.nodelay());
        #[cfg(target_os = "linux")]
        {
            assert!(tcp.keepalive().is_some());
            assert_eq!(tcp.user_timeout(), Some(DEAD_CONNECTION_AFTER));
        }
    }

    #[test]
    fn a_busy_or_restarting_server_is_unavailable_not_a_rejection() {
        for code in ["LOADING", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "BUSY"] {
            assert!(server_busy(code), "{code}");
        }
        for code in ["WRONGTYPE", "ERR", "NOSCRIPT", "NOPERM"] {
            assert!(!server_busy(code), "{code}");
        }
    }

    /// A record of alice's.
    fn alices() -> Record {
        let mut r = session_core::testing::sample_record();
        r.owner = Some("alice".into());
        r
    }

    /// A record of alice's, created in `store`, and the value it was sent as.
    async fn created_for_alice(store: &RedisStore) -> (Record, Vec<u8>) {
        let r = alices();
        let value = value::encode(&r).expect("encode");
        assert_eq!(
            store.create_value(&r, value.clone()).await.expect("create"),
            Created::Created
        );
        (r, value)
    }

    /// A save that takes a session from its owner removes the owner's entry
    /// once the write is made. Should that removal arrive after a later
    /// save gave the session back (it travels as a command of its own), it
    /// leaves the entry the later save raised: the owner's listing and log
    /// out everywhere still find the session.
    #[tokio::test]
    async fn a_late_removal_leaves_the_entry_of_a_session_given_back() {
        let Some(store) = store().await else {
            return;
        };
        let (r, _) = created_for_alice(&store).await;
        let mut anonymous = r.clone();
        anonymous.version += 1;
        anonymous.owner = None;
        assert_eq!(
            store.save(&anonymous, r.version).await.unwrap(),
            Saved::Saved
        );
        assert!(store.ids_of_owner("alice").await.unwrap().is_empty());
        let mut back = anonymous.clone();
        back.version += 1;
        back.owner = Some("alice".into());
        assert_eq!(
            store.save(&back, anonymous.version).await.unwrap(),
            Saved::Saved
        );
        // The first save's removal, arriving only now.
        store.unindex("alice", &r.id).await;
        assert_eq!(store.ids_of_owner("alice").await.unwrap(), vec![r.id]);
        assert_eq!(store.delete_owner("alice").await.unwrap(), 1);
        assert_eq!(store.load(&r.id).await.unwrap(), None);
        // Once the session is gone, a removal takes its entry, and the
        // index goes with its last entry.
        store.unindex("alice", &r.id).await;
        let left: i64 = redis::cmd("EXISTS")
            .arg(store.owner_key("alice"))
            .query_async(&mut store.conn.clone())
            .await
            .unwrap();
        assert_eq!(left, 0);
    }

    /// Breaks `owner`'s index: a string where the sorted set was (gone in a
    /// minute should the test fail), so that every command on it fails while
    /// the sessions' own keys still take writes.
    async fn break_index(store: &RedisStore, owner: &str) {
        let (): () = redis::cmd("SET")
            .arg(store.owner_key(owner))
            .arg("not an index")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut store.conn.clone())
            .await
            .expect("break the index");
    }

    /// Records whose deadline is at or before the epoch are written as
    /// expired ones (Redis refuses such a `PXAT`): created, never loaded.
    #[tokio::test]
    async fn a_record_that_expired_in_1970_is_created_and_never_loads() {
        for store in [store().await, cluster_store().await].into_iter().flatten() {
            for deadline in [-10, 0, 1] {
                let mut r = session_core::testing::sample_record();
                r.created_at = Timestamp::from_unix_millis(-20);
                r.expires_at = Timestamp::from_unix_millis(deadline);
                assert_eq!(store.create(&r).await.expect("create"), Created::Created);
                assert_eq!(store.load(&r.id).await.expect("load"), None);
                let mut next = r.clone();
                next.version = 1;
                assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Missing);
            }
        }
    }

    /// A session is live by the app server's clock, as `load` decides, also
    /// for the calls that write or list: a key that Redis still keeps (its
    /// clock behind the app server's) whose deadline has passed is not
    /// saved (missing, whatever the version asked), touched back to life,
    /// listed as its owner's, or counted by a logout everywhere (which
    /// deletes it).
    #[tokio::test]
    async fn a_session_past_its_deadline_is_not_written_while_redis_keeps_its_key() {
        for store in [store().await, cluster_store().await].into_iter().flatten() {
            let (r, _) = created_for_alice(&store).await;
            // The header's deadline, which counts, a second ago; the key
            // itself stays for another two hours.
            let past = Timestamp::now() - std::time::Duration::from_secs(1);
            let _: i64 = redis::cmd("SETRANGE")
                .arg(store.key(&r.id))
                .arg(value::DEADLINE_AT)
                .arg(&value::deadline_bytes(past)[..])
                .query_async(&mut store.conn.clone())
                .await
                .expect("move the deadline back");
            assert_eq!(store.load(&r.id).await.expect("load"), None);
            let later = Timestamp::now() + std::time::Duration::from_secs(3600);
            let touched = store.touch(&r.id, r.version, Some("alice"), later);
            assert!(
                !touched.await.expect("touch"),
                "an expired session was touched"
            );
            let mut next = r.clone();
            next.version += 1;
            next.expires_at = later;
            assert_eq!(
                store.save(&next, r.version).await.expect("save"),
                Saved::Missing
            );
            let stale = r.version + 5;
            assert_eq!(
                store.save(&next, stale).await.expect("save"),
                Saved::Missing,
                "no live record: missing, not a conflict"
            );
            assert_eq!(store.load(&r.id).await.expect("load"), None);
            assert!(store.ids_of_owner("alice").await.expect("list").is_empty());
            assert_eq!(
                store
                    .delete_owner("alice")
                    .await
                    .expect("log out everywhere"),
                0,
                "an expired session was counted"
            );
            let kept: i64 = redis::cmd("EXISTS")
                .arg(store.key(&r.id))
                .query_async(&mut store.conn.clone())
                .await
                .expect("exists");
            assert_eq!(kept, 0, "the expired session's key was left");
            // The index entry stays to its deadline, by design; not in the
            // test server.
            forget(&store, "alice").await;
        }
    }

    /// A session that rotates between `delete_owner`'s listing and its
    /// deletes (a login: the successor written, then the listed record
    /// retired) is still logged out: the listed record is found gone, so the
    /// index is listed again and the successor deleted.
    #[tokio::test]
    async fn logging_out_everywhere_reaches_a_session_rotated_after_the_listing() {
        for store in [store().await, cluster_store().await].into_iter().flatten() {
            let (old, _) = created_for_alice(&store).await;
            let successor = alices();
            let (s, next) = (&store, &successor);
            let rotate = move || async move {
                assert_eq!(s.create(next).await.expect("create"), Created::Created);
                let long_past = Timestamp::from_unix_millis(1);
                let retired = s.touch(&old.id, old.version, Some("alice"), long_past);
                assert!(retired.await.expect("retire"));
                s.delete(&old.id).await.expect("delete");
            };
            let deleted = store.delete_owner_listed("alice", rotate).await;
            assert_eq!(deleted.expect("delete owner"), 1);
            assert_eq!(store.load(&successor.id).await.expect("load"), None);
            assert!(store.ids_of_owner("alice").await.expect("list").is_empty());
            forget(&store, "alice").await;
        }
    }

    #[tokio::test]
    async fn a_write_whose_index_entry_failed_is_not_made() {
        // On a standalone server the entry is raised in the write's script,
        // on a Cluster by a command of its own: both paths.
        for store in [store().await, cluster_store().await].into_iter().flatten() {
            no_write_without_its_index_entry(&store).await;
        }
    }

    async fn no_write_without_its_index_entry(store: &RedisStore) {
        let (r, _) = created_for_alice(store).await;
        break_index(store, "alice").await;
        let refused = |e: StoreError| {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                chain = format!("{chain}: {cause}");
                source = cause.source();
            }
            assert!(chain.contains("WRONGTYPE"), "{chain}");
        };
        // A save, a touch and a create that could not raise the index change
        // nothing: a live record missing from its owner's index would
        // survive the owner's logout everywhere once the old entry lapses.
        let mut next = r.clone();
        next.version = r.version + 1;
        next.expires_at += std::time::Duration::from_secs(3600);
        next.data.insert("role".into(), b"\xa5admin".to_vec());
        refused(store.save(&next, r.version).await.expect_err("save"));
        refused(
            store
                .touch(&r.id, r.version, Some("alice"), next.expires_at)
                .await
                .expect_err("touch"),
        );
        assert_eq!(store.load(&r.id).await.expect("load"), Some(r.clone()));
        let other = alices();
        refused(store.create(&other).await.expect_err("create"));
        assert_eq!(store.load(&other.id).await.expect("load"), None);
        forget(store, "alice").await;
        store.delete(&r.id).await.expect("clean up");
    }

    /// A write that took a record from an owner is reported as made even
    /// when that owner's index could not lose the entry afterwards.
    #[tokio::test]
    async fn writes_made_are_reported_made_when_the_old_entry_stays() {
        let Some(store) = store().await else {
            return;
        };
        let (r, _) = created_for_alice(&store).await;
        break_index(&store, "alice").await;
        // A save that moves the record to bob.
        let mut bobs = r.clone();
        bobs.version += 1;
        bobs.owner = Some("bob".into());
        assert_eq!(
            store.save(&bobs, r.version).await.expect("save"),
            Saved::Saved
        );
        assert_eq!(store.ids_of_owner("bob").await.expect("list"), vec![r.id]);
        // A touch into the past (a rotation retiring the record), with bob's
        // index broken too.
        break_index(&store, "bob").await;
        let past = Timestamp::now() - std::time::Duration::from_secs(1);
        assert!(store
            .touch(&r.id, bobs.version, Some("bob"), past)
            .await
            .expect("touch"));
        assert_eq!(store.load(&r.id).await.expect("load"), None);
        forget(&store, "alice").await;
        forget(&store, "bob").await;
    }

    /// The index drops the entries whose deadline has passed by the Redis
    /// server's clock, and keeps one due in a few seconds.
    #[tokio::test]
    async fn the_index_is_pruned_by_the_servers_clock() {
        for store in [store().await, cluster_store().await].into_iter().flatten() {
            let mut conn = store.conn.clone();
            let index = store.owner_key("carol");
            let soon = Timestamp::now().unix_millis() + 5_000;
            let (gone, due_soon) = (alices().id, alices().id);
            let _: i64 = redis::cmd("ZADD")
                .arg(&index)
                .arg(1)
                .arg(gone.to_string())
                .arg(soon)
                .arg(due_soon.to_string())
                .query_async(&mut conn)
                .await
                .expect("entries");
            let raised = alices().id;
            store
                .index("carol", &raised, soon + 60_000)
                .await
                .expect("index");
            let mut left: Vec<String> = redis::cmd("ZRANGE")
                .arg(&index)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("list");
            left.sort();
            let mut want = vec![due_soon.to_string(), raised.to_string()];
            want.sort();
            assert_eq!(left, want);
            forget(&store, "carol").await;
        }
    }

    /// An owner with more sessions than go out at once has all of them
    /// listed, and ended, and no other owner's.
    #[tokio::test]
    async fn an_owner_with_many_sessions_has_each_listed_and_ended() {
        let Some(store) = store().await else {
            return;
        };
        let mut ids = Vec::new();
        for _ in 0..3 * OWNER_CALLS_IN_FLIGHT + 1 {
            ids.push(created_for_alice(&store).await.0.id);
        }
        let mut bob = session_core::testing::sample_record();
        bob.owner = Some("bob".into());
        assert_eq!(store.create(&bob).await.expect("create"), Created::Created);
        let mut listed = store.ids_of_owner("alice").await.expect("list");
        listed.sort();
        ids.sort();
        assert_eq!(listed, ids);
        assert_eq!(
            store.delete_owner("alice").await.expect("delete owner"),
            ids.len() as u64
        );
        assert!(store.ids_of_owner("alice").await.expect("list").is_empty());
        assert_eq!(store.ids_of_owner("bob").await.expect("list"), vec![bob.id]);
        store.delete(&bob.id).await.expect("delete");
        forget(&store, "alice").await;
        forget(&store, "bob").await;
    }

    /// A member of an owner's index that is not an id, not even UTF-8
    /// (written by something else), is skipped: the owner's sessions are
    /// still listed and ended.
    #[tokio::test]
    async fn a_foreign_index_member_keeps_no_session_from_being_listed_or_ended() {
        let Some(store) = store().await else {
            return;
        };
        let (r, _) = created_for_alice(&store).await;
        let far = (Timestamp::now() + std::time::Duration::from_secs(3600)).unix_millis();
        let _: i64 = redis::cmd("ZADD")
            .arg(store.owner_key("alice"))
            .arg(far)
            .arg(&b"\xff\xfe not an id"[..])
            .arg(far)
            .arg("not an id either")
            .query_async(&mut store.conn.clone())
            .await
            .expect("foreign members");
        assert_eq!(store.ids_of_owner("alice").await.expect("list"), vec![r.id]);
        assert_eq!(store.delete_owner("alice").await.expect("delete owner"), 1);
        assert_eq!(store.load(&r.id).await.expect("load"), None);
        forget(&store, "alice").await;
    }

    #[tokio::test]
    async fn a_resent_create_is_created_and_another_create_of_the_id_is_taken() {
        let Some(store) = store().await else {
            return;
        };
        let (r, value) = created_for_alice(&store).await;
        assert_eq!(
            store.create_value(&r, value).await.expect("resent"),
            Created::Created
        );
        assert_eq!(store.create(&r).await.expect("create"), Created::IdTaken);
        assert_eq!(store.load(&r.id).await.expect("load"), Some(r.clone()));
        assert_eq!(store.delete_owner("alice").await.expect("delete"), 1);
        forget(&store, "alice").await;
    }

    #[tokio::test]
    async fn a_resent_save_is_saved_and_another_write_of_the_same_version_conflicts() {
        let Some(store) = store().await else {
            return;
        };
        let r = session_core::testing::sample_record();
        assert_eq!(store.create(&r).await.expect("create"), Created::Created);
        let mut next = r.clone();
        next.version = 1;
        next.data.insert("n".into(), vec![1]);
        let value = value::encode(&next).expect("encode");
        let resend = || store.save_value(&next, 0, value.clone());
        assert_eq!(resend().await.expect("save"), Saved::Saved);
        // The very same command again, as the Cluster client resends it when
        // the connection dropped before the reply: already applied.
        assert_eq!(resend().await.expect("resent"), Saved::Saved);
        // Another process that made the same change from the same version
        // writes the same record, but it is another write: it conflicts.
        assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Conflict);
        // Other processes increment on top of it before a resend arrives:
        // still applied (a conflict would make the caller increment again),
        // up to `TOKENS - 1` writes on top.
        let mut on_top = next.clone();
        for n in 2..=value::TOKENS as u8 {
            on_top.version = u64::from(n);
            on_top.data.insert("n".into(), vec![n]);
            let expected = on_top.version - 1;
            assert_eq!(
                store.save(&on_top, expected).await.expect("save"),
                Saved::Saved
            );
            assert_eq!(resend().await.expect("resent"), Saved::Saved, "{n}");
            assert_eq!(
                store.load(&r.id).await.expect("load").as_ref(),
                Some(&on_top)
            );
        }
        // One more, and the first send's token has left the value: the
        // resend can no longer be told from a stale write.
        on_top.version += 1;
        assert_eq!(
            store.save(&on_top, on_top.version - 1).await.expect("save"),
            Saved::Saved
        );
        assert_eq!(resend().await.expect("resent"), Saved::Conflict);
        store.delete(&r.id).await.expect("delete");
    }

    /// A rotation's retiring touch that the Cluster client sends again
    /// (its connection dropped before the reply) answers as the first send
    /// did; another retirement of the same version does not, and the
    /// retired value is gone for every other command.
    #[tokio::test]
    async fn a_resent_retirement_is_recognised_and_another_is_not() {
        let Some(store) = store().await else {
            return;
        };
        let (r, _) = created_for_alice(&store).await;
        let alice = Some("alice");
        let token = value::token();
        // Without the owner, the index entry stays, as it does until the
        // retirement's own unindexing lands: listings must skip the value.
        let retire = |token| store.retire(&r.id, r.version, None, token);
        assert!(retire(token).await.expect("retire"));
        let ttl: i64 = redis::cmd("PTTL")
            .arg(store.key(&r.id))
            .query_async(&mut store.conn.clone())
            .await
            .expect("pttl");
        assert!(
            0 < ttl && ttl <= value::RETIRED_FOR_MS as i64,
            "kept {ttl} ms"
        );
        assert!(retire(token).await.expect("resent"), "a resend was refused");
        assert!(
            !retire(value::token()).await.expect("retire"),
            "another retirement of the same version succeeded"
        );
        assert_eq!(store.load(&r.id).await.expect("load"), None);
        let later = Timestamp::now() + std::time::Duration::from_secs(3600);
        assert!(
            !store
                .touch(&r.id, r.version, alice, later)
                .await
                .expect("touch"),
            "a touch brought the retired record back"
        );
        let mut next = r.clone();
        next.version += 1;
        next.expires_at = later;
        assert_eq!(
            store.save(&next, r.version).await.expect("save"),
            Saved::Missing,
            "a save brought the retired record back"
        );
        assert_eq!(store.load(&r.id).await.expect("load"), None);
        assert!(store.ids_of_owner("alice").await.expect("list").is_empty());
        assert_eq!(store.delete_owner("alice").await.expect("delete owner"), 0);
        // That removed the retired value: the same touch finds nothing now.
        assert!(!retire(token).await.expect("retire"));
        forget(&store, "alice").await;
    }

    #[tokio::test]
    async fn a_create_resent_after_a_logout_everywhere_stays_in_the_index() {
        let Some(store) = store().await else {
            return;
        };
        let (r, value) = created_for_alice(&store).await;
        assert_eq!(store.delete_owner("alice").await.expect("logout"), 1);
        // The Cluster client resends the create's `SET NX` (the first reply
        // was lost), and it lands only now.
        let mut conn = store.conn.clone();
        let _: Value = redis::cmd("SET")
            .arg(store.key(&r.id))
            .arg(&value)
            .arg("NX")
            .arg("PXAT")
            .arg(r.expires_at.unix_millis())
            .query_async(&mut conn)
            .await
            .expect("resend");
        // The owner's next logout everywhere still finds it.
        assert_eq!(store.ids_of_owner("alice").await.expect("list"), vec![r.id]);
        assert_eq!(store.delete_owner("alice").await.expect("logout"), 1);
        forget(&store, "alice").await;
    }

    #[tokio::test]
    async fn listings_leave_the_entry_of_a_login_on_its_way() {
        let Some(store) = store().await else {
            return;
        };
        let r = session_core::testing::sample_record();
        assert_eq!(store.create(&r).await.expect("create"), Created::Created);
        // A login's save has raised alice's entry; its write of the record,
        // now naming alice, has not landed yet.
        let expires = r.expires_at.unix_millis();
        store.index("alice", &r.id, expires).await.expect("index");
        assert_eq!(store.ids_of_owner("alice").await.expect("list"), vec![]);
        assert_eq!(store.delete_owner("alice").await.expect("logout"), 0);
        let mut conn = store.conn.clone();
        let score: Option<i64> = redis::cmd("ZSCORE")
            .arg(store.owner_key("alice"))
            .arg(r.id.to_string())
            .query_async(&mut conn)
            .await
            .expect("score");
        assert_eq!(
            score,
            Some(expires),
            "the entry stays for the write on its way"
        );
        let mut next = r.clone();
        next.version = 1;
        next.owner = Some("alice".into());
        assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
        assert_eq!(store.delete_owner("alice").await.expect("logout"), 1);
        assert_eq!(store.load(&r.id).await.expect("load"), None);
        forget(&store, "alice").await;
    }
}
