//! The Iris sessions demo, written once: configuration from the environment,
//! the store, and what each route does. Each framework's module
//! (`session_demo::{axum, actix, rocket}`) maps these routes with its own
//! router and each adapter's example (`demo`, `actix_demo`, `rocket_demo`)
//! runs it, so every framework serves the same demo, and the HTTP suite tests
//! them all the same way.
//!
//! | route | what it does | body |
//! |---|---|---|
//! | `/` | touches no session | a list of the routes |
//! | `/set` | sets `name = "iris"` | `All ok session set to: iris` |
//! | `/get` | reads `name` | `The name on the /set was: {name}` |
//! | `/delete` | removes `name` | `Deleted name: {true/false}` |
//! | `/clear` | removes every value | `Cleared all values` |
//! | `/destroy` | ends the session | `Destroyed the session` |
//! | `/incr` | adds 1 to `count` with `increment` | the new count |
//! | `/login/{user}` | rotates the id, sets the owner, leaves a flash `/app` shows once | `Logged in as {user}` |
//! | `/logout` | logs out under a new id, keeping the session's values (`count`, `name`) | `Logged out {user}` |
//! | `/logout-all` | ends every session of the current owner | `Ended {n} session(s) of {user}` |
//! | `/sessions` | lists the current owner's sessions (a devices page) | `{record id} started {unix} last seen {unix}[ (this one)]` per line |
//! | `/sessions/end/{id}` | ends one of them | `Ended session {short id}` |
//! | `/app` | an HTML page for a browser: log in (and its flash), counter, log out (everywhere) | HTML |

use std::env;
use std::fmt::Write as _;
use std::time::Duration;

use session_core::{Config, Manager, Session};
use session_memory::MemoryStore;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "rocket")]
pub mod rocket;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_choices_parse() {
        assert_eq!(StoreChoice::parse("memory"), Ok(StoreChoice::Memory));
        assert_eq!(
            StoreChoice::parse("redis://127.0.0.1:6379/2"),
            Ok(StoreChoice::Redis("redis://127.0.0.1:6379/2".into()))
        );
        assert_eq!(
            StoreChoice::parse("redis+cluster://a:1, b:2"),
            Ok(StoreChoice::RedisCluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert!(StoreChoice::parse("redis+cluster://").is_err());
        assert_eq!(
            StoreChoice::parse("sled:./s"),
            Ok(StoreChoice::Sled("./s".into()))
        );
        assert!(StoreChoice::parse("sled:").is_err());
        assert_eq!(
            StoreChoice::parse("postgres://u@h/d"),
            Ok(StoreChoice::Postgres("postgres://u@h/d".into()))
        );
        assert_eq!(
            StoreChoice::parse("mariadb://u@h/d"),
            Ok(StoreChoice::MySql("mysql://u@h/d".into()))
        );
        assert_eq!(
            StoreChoice::parse("sqlite::memory:"),
            Ok(StoreChoice::Sqlite("sqlite::memory:".into()))
        );
        assert!(StoreChoice::parse("sqlite:").is_err());
        assert!(StoreChoice::parse("mongodb://x").is_err());
    }

    /// `/csrf`'s cookie is `Secure` exactly when the session's is, so that
    /// `SESSION_SECURE=false` lets Safari keep both over plain HTTP.
    #[tokio::test]
    async fn the_csrf_cookie_is_secure_as_the_session_cookie_is() {
        for secure in [true, false] {
            let config = Config::builder().with_secure(secure).build().unwrap();
            let manager = Manager::new(MemoryStore::new(), config);
            let session = manager.session_from_cookies(None::<&str>);
            let ((status, token), cookie) = csrf(&session).await;
            assert_eq!(status, 200);
            let cookie = cookie.expect("a cookie with the token");
            assert!(cookie.starts_with(&format!("csrf={token}; Path=/")));
            assert_eq!(cookie.contains("; Secure"), secure, "{cookie}");
        }
    }

    /// The CSRF token stays while the same user is signed in (a second
    /// tab's `/csrf` does not invalidate the first one's forms) and changes
    /// at every login and logout.
    #[tokio::test]
    async fn the_csrf_token_lasts_until_who_is_signed_in_changes() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let session = manager.session_from_cookies(None::<&str>);
        let token = |answer: (Reply, Option<String>)| answer.0 .1;
        let first = token(csrf(&session).await);
        assert_eq!(token(csrf(&session).await), first);
        assert_eq!(login(&session, "alice").await.0, 200);
        let alice = token(csrf(&session).await);
        assert_ne!(alice, first);
        assert_eq!(token(csrf(&session).await), alice);
        assert_eq!(logout(&session).await.0, 200);
        assert_ne!(token(csrf(&session).await), alice);
    }

    /// A login over another user's session starts from no values (a shared
    /// computer: bob must not see alice's), a login as the same user keeps
    /// them, and a name that was not UTF-8 in the URL is refused.
    #[tokio::test]
    async fn logging_in_as_someone_else_starts_from_no_values() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let session = manager.session_from_cookies(None::<&str>);
        assert_eq!(login(&session, "alice").await.0, 200);
        assert_eq!(incr(&session).await, (200, "1".into()));
        assert_eq!(login(&session, "alice").await.0, 200);
        assert_eq!(incr(&session).await, (200, "2".into()));
        assert_eq!(login(&session, "bob").await.0, 200);
        assert_eq!(incr(&session).await, (200, "1".into()));
        // Refused names change nothing: bob keeps his values.
        for refused in [
            "b\u{FFFD}b",
            "a\0b",
            &"x".repeat(session_core::MAX_OWNER_LEN + 1),
        ] {
            assert_eq!(login(&session, refused).await.0, 400, "{refused:?}");
        }
        assert_eq!(session.owner().await.unwrap().as_deref(), Some("bob"));
        assert_eq!(incr(&session).await, (200, "2".into()));
        // Signed out, then another user: the values go too, flashes
        // included.
        session.insert_flash("for-bob", &1).await.unwrap();
        assert_eq!(logout(&session).await.0, 200);
        assert_eq!(login(&session, "carol").await.0, 200);
        assert_eq!(incr(&session).await, (200, "1".into()));
        assert_eq!(session.flash_keys().await.unwrap(), ["notice"]);
        // Signed out, then the same user again: they stay.
        assert_eq!(logout(&session).await.0, 200);
        assert_eq!(login(&session, "carol").await.0, 200);
        assert_eq!(incr(&session).await, (200, "2".into()));
    }

    /// A `/csrf` that cannot reach the store answers the error alone: no
    /// empty `Set-Cookie`, no cache headers that would keep the error.
    #[tokio::test]
    async fn a_failed_csrf_answer_carries_no_cookie() {
        let store = session_core::testing::Instrumented::new(MemoryStore::new());
        store.fail_with(Some(session_core::StoreErrorKind::Unavailable));
        let manager = Manager::new(store, Config::default());
        // A well-formed id, so that reading the token needs the store.
        let cookie = format!("session={}", "A".repeat(session_core::ID_TEXT_LEN));
        let session = manager.session_from_cookies([cookie.as_str()]);
        let ((status, _), cookie) = csrf(&session).await;
        assert_eq!(status, 503);
        assert_eq!(cookie, None);
    }

    #[test]
    fn errors_answer_with_their_own_status_and_reason() {
        let ended = fail(&session_core::Error::Ended);
        assert_eq!(ended.0, 409);
        assert!(ended.1.starts_with("Conflict"), "{}", ended.1);
        let busy = fail(&session_core::Error::Contention { attempts: 4 });
        assert_eq!(busy, (503, "Service Unavailable".into()));
        let invalid = fail(&session_core::Error::Invalid("x".into()));
        assert_eq!(invalid, (500, "Internal Server Error".into()));
    }

    #[test]
    fn passwords_never_reach_the_banner() {
        for store in [
            StoreChoice::Redis("redis://:hunter2@db:6379".into()),
            StoreChoice::RedisCluster(vec![
                "redis://:hunter2@a:7000".into(),
                "redis://:hunter2@b:7001".into(),
            ]),
            StoreChoice::Postgres("postgres://app:hunter2@db/app".into()),
            StoreChoice::MySql("mysql://app:hunter2@db/app".into()),
            // The password as a query parameter, with a user before `@` or not.
            StoreChoice::Postgres("postgres://db/app?user=app&password=hunter2".into()),
            StoreChoice::Postgres("postgres://app@db/app?password=hunter2".into()),
            StoreChoice::MySql("mysql://db/app?password=hunter2&ssl-mode=REQUIRED".into()),
            // A `?` or `@` inside the password, or an `@` in the query.
            StoreChoice::Postgres("postgres://app:pa?hunter2@db/app".into()),
            StoreChoice::Postgres("postgres://app:pa@hunter2@db/app".into()),
            StoreChoice::Postgres("postgres://db/app?user=a@b&password=hunter2".into()),
        ] {
            let d = store.describe();
            assert!(!d.contains("hunter2"), "{d}");
        }
        // What is not secret stays, to tell which server it is.
        let d = StoreChoice::Postgres("postgres://app:hunter2@db:5433/app?sslmode=require".into())
            .describe();
        assert!(d.contains("db:5433/app"), "{d}");
    }
}

/// What the demo serves: a status code and a plain-text body.
pub type Reply = (u16, String);

/// The settings read from the environment.
#[derive(Debug)]
pub struct Settings {
    /// `PORT`, default 8080.
    pub port: u16,
    /// The validated session configuration.
    pub config: Config,
    /// The store chosen by `SESSION_STORE`.
    pub store: StoreChoice,
}

/// The store `SESSION_STORE` names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreChoice {
    /// `memory`: in this process.
    Memory,
    /// `redis://...`, or `rediss://...` over TLS (the feature `tls`): one
    /// Redis server.
    Redis(String),
    /// `redis+cluster://host:port,host:port`: a Redis Cluster.
    RedisCluster(Vec<String>),
    /// `sled:PATH`: an embedded database in the directory PATH.
    Sled(std::path::PathBuf),
    /// `postgres://...`: a PostgreSQL table.
    Postgres(String),
    /// `mysql://...`: a MySQL or MariaDB table.
    MySql(String),
    /// `sqlite:PATH` or `sqlite::memory:`: a SQLite table.
    Sqlite(String),
}

impl StoreChoice {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "memory" {
            Ok(Self::Memory)
        } else if text.starts_with("redis://") || text.starts_with("rediss://") {
            Ok(Self::Redis(text.to_owned()))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Self::Postgres(text.to_owned()))
        } else if text.starts_with("mysql://") || text.starts_with("mariadb://") {
            Ok(Self::MySql(text.replacen("mariadb://", "mysql://", 1)))
        } else if let Some(rest) = text.strip_prefix("sqlite:") {
            if rest.is_empty() {
                return Err(
                    "sqlite: needs a file, as in sqlite:sessions.db, or sqlite::memory:".into(),
                );
            }
            Ok(Self::Sqlite(text.to_owned()))
        } else if let Some(path) = text.strip_prefix("sled:") {
            if path.is_empty() {
                return Err("sled: needs a directory, as in sled:./sessions".into());
            }
            Ok(Self::Sled(path.into()))
        } else if let Some(nodes) = text.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err("redis+cluster:// needs at least one host:port".into());
            }
            Ok(Self::RedisCluster(nodes))
        } else {
            Err(format!(
                "SESSION_STORE={text:?} is not a store this demo knows"
            ))
        }
    }

    /// A line for the start-up banner.
    pub fn describe(&self) -> String {
        match self {
            Self::Memory => "memory (in this process; sessions end when it stops)".into(),
            Self::Redis(url) => format!("Redis at {}", redact(url)),
            Self::RedisCluster(nodes) => format!(
                "Redis Cluster via {}",
                nodes
                    .iter()
                    .map(|n| redact(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Sled(path) => {
                format!("sled database in {} (kept across restarts)", path.display())
            }
            Self::Postgres(url) => format!("PostgreSQL at {}", redact(url)),
            Self::MySql(url) => format!("MySQL/MariaDB at {}", redact(url)),
            Self::Sqlite(url) => format!("SQLite {url}"),
        }
    }
}

/// The URL without its secrets: neither the user information nor the query,
/// where PostgreSQL and MySQL URLs may carry `password=`. Text that does not
/// parse as a URL keeps its scheme alone.
fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if !url.username().is_empty() || url.password().is_some() {
                let _ = url.set_password(None);
                let _ = url.set_username("***");
            }
            if url.query().is_some() {
                url.set_query(Some("***"));
            }
            url.to_string()
        }
        Err(_) => match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***"),
            None => "***".into(),
        },
    }
}

/// Background work the chosen store needs (a sweeper of expired records);
/// keep it alive while serving.
#[derive(Debug, Default)]
pub struct Background {
    _sweeper: Option<session_core::Sweeper>,
}

impl Settings {
    /// Connects to the chosen store and builds the manager, with the store's
    /// background work.
    ///
    /// # Errors
    /// A message saying which store could not be reached and why.
    pub async fn start(&self) -> Result<(Manager, Background), String> {
        let manager = self.manager().await?;
        let sweeper = match self.store {
            // Stores without native expiry.
            StoreChoice::Sled(_)
            | StoreChoice::Postgres(_)
            | StoreChoice::MySql(_)
            | StoreChoice::Sqlite(_) => Some(session_core::Sweeper::spawn(
                manager.store().clone(),
                Duration::from_secs(60),
            )),
            StoreChoice::Memory | StoreChoice::Redis(_) | StoreChoice::RedisCluster(_) => None,
        };
        Ok((manager, Background { _sweeper: sweeper }))
    }

    /// Connects to the chosen store and builds the manager, without background
    /// work; use [`Settings::start`] to serve.
    ///
    /// # Errors
    /// A message saying which store could not be reached and why.
    pub async fn manager(&self) -> Result<Manager, String> {
        let config = self.config.clone();
        let fail = |e: &dyn std::error::Error| {
            format!("cannot use {}: {}", self.store.describe(), error_chain(e))
        };
        Ok(match &self.store {
            StoreChoice::Postgres(url) => {
                let store = session_sql::PostgresStore::connect(url)
                    .await
                    .map_err(|e| fail(&e))?;
                store.migrate().await.map_err(|e| fail(&e))?;
                Manager::new(store, config)
            }
            StoreChoice::MySql(url) => {
                let store = session_sql::MySqlStore::connect(url)
                    .await
                    .map_err(|e| fail(&e))?;
                store.migrate().await.map_err(|e| fail(&e))?;
                Manager::new(store, config)
            }
            StoreChoice::Sqlite(url) => {
                let store = session_sql::SqliteStore::connect(url)
                    .await
                    .map_err(|e| fail(&e))?;
                store.migrate().await.map_err(|e| fail(&e))?;
                Manager::new(store, config)
            }
            StoreChoice::Sled(path) => {
                let store = session_sled::SledStore::open(path).map_err(|e| {
                    format!("cannot use {}: {}", self.store.describe(), error_chain(&e))
                })?;
                Manager::new(store, config)
            }
            StoreChoice::Memory => Manager::new(MemoryStore::new(), config),
            StoreChoice::Redis(url) => {
                let store = session_redis::RedisStore::connect(url).await.map_err(|e| {
                    format!("cannot use {}: {}", self.store.describe(), error_chain(&e))
                })?;
                Manager::new(store, config)
            }
            StoreChoice::RedisCluster(nodes) => {
                let store =
                    session_redis::RedisStore::connect_cluster(nodes.iter().map(String::as_str))
                        .await
                        .map_err(|e| {
                            format!("cannot use {}: {}", self.store.describe(), error_chain(&e))
                        })?;
                Manager::new(store, config)
            }
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

const HELP: &str = "\
environment variables:
  PORT                      port to listen on, 1-65535 (default 8080)
  SESSION_STORE             memory (default: the in-memory store)
                            redis://[:password@]host:port[/db] (one Redis server)
                            redis+cluster://host:port,host:port (a Redis Cluster)
                            sled:PATH (an embedded database in directory PATH)
                            postgres://user@host/db (PostgreSQL)
                            mysql://user@host/db (MySQL or MariaDB)
                            sqlite:FILE or sqlite::memory: (SQLite)
  SESSION_SECURE            true (default) or false; false drops the Secure
                            attribute of the session's and /csrf's cookies
                            for plain-HTTP local use
  SESSION_IDLE_TIMEOUT      seconds without use before a session ends (default 7200)
  SESSION_ABSOLUTE_TIMEOUT  seconds after creation a session ends (default 86400)";

fn var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn seconds(name: &str) -> Result<Option<Duration>, String> {
    match var(name) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n))),
            _ => Err(format!("{name}={v:?} is not a positive number of seconds")),
        },
    }
}

/// Reads the demo's settings from the environment.
///
/// # Errors
/// A message naming the bad variable and listing the valid forms.
pub fn settings_from_env() -> Result<Settings, String> {
    let with_help = |e: String| format!("{e}\n\n{HELP}");
    let port = match var("PORT") {
        None => 8080,
        Some(p) => p
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| with_help(format!("PORT={p:?} is not a port number")))?,
    };
    let secure = match var("SESSION_SECURE").as_deref().map(str::trim) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(other) => {
            return Err(with_help(format!(
                "SESSION_SECURE={other:?} must be true or false"
            )))
        }
    };
    let mut config = Config::builder().with_secure(secure);
    if let Some(idle) = seconds("SESSION_IDLE_TIMEOUT").map_err(with_help)? {
        config = config.with_idle_timeout(Some(idle));
    }
    if let Some(absolute) = seconds("SESSION_ABSOLUTE_TIMEOUT").map_err(with_help)? {
        config = config.with_absolute_timeout(Some(absolute));
    }
    let config = config.build().map_err(|e| with_help(e.to_string()))?;
    let store = match var("SESSION_STORE") {
        None => StoreChoice::Memory,
        Some(text) => StoreChoice::parse(&text).map_err(with_help)?,
    };
    Ok(Settings {
        port,
        config,
        store,
    })
}

/// The whole `main` of a framework's demo: settings from the environment
/// (exit code 2 with the valid forms when one is wrong), the banner, the
/// store, then `serve` on the listener until it returns.
pub fn main_with<F, Fut>(framework: &str, serve: F) -> std::process::ExitCode
where
    F: FnOnce(std::net::TcpListener, Manager) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    start_banner(framework, &settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let (manager, _background) = settings.start().await?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", settings.port))
            .map_err(|e| format!("cannot listen on port {}: {e}", settings.port))?;
        serve(listener, manager).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (`RUST_LOG` filters, default `info`) and prints the banner.
pub fn start_banner(framework: &str, settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let mut banner = format!(
        "Iris sessions demo on {framework}: http://127.0.0.1:{}/\n  store: {}\n",
        settings.port,
        settings.store.describe()
    );
    if settings.config.secure() {
        banner.push_str(
            "  cookies are Secure: Chrome, Firefox and curl accept them on http://localhost and 127.0.0.1; for Safari, or another name over plain HTTP, run with SESSION_SECURE=false\n",
        );
    } else {
        banner.push_str("  SESSION_SECURE=false: the cookie's Secure attribute is OFF (plain-HTTP local use only)\n");
    }
    let _ = write!(
        banner,
        "  routes: /set /get /delete /clear /destroy /incr /login/{{user}} /logout /logout-all /sessions /sessions/end/{{id}} /csrf; in a browser: /app"
    );
    eprintln!("{banner}");
}

fn fail(error: &session_core::Error) -> Reply {
    tracing::error!(%error, "session error");
    let status = error.http_status();
    let text = match status {
        503 => "Service Unavailable",
        409 => "Conflict: the session was ended by another request",
        _ => "Internal Server Error",
    };
    (status, text.into())
}

fn reply(result: session_core::Result<String>) -> Reply {
    result.map_or_else(|e| fail(&e), |body| (200, body))
}

/// `/`: touches no session.
pub fn index() -> Reply {
    (
        200,
        "You should navigate to /set, /get, /delete, /clear, /destroy, /incr, /login/{user}, /logout, /logout-all, /sessions, /sessions/end/{id} or /csrf, or open /app in a browser".into(),
    )
}

/// Escapes text for HTML.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `/app`: a small HTML page for a browser (log in, a counter, log out, log
/// out everywhere, and the user's sessions with a button to end each). Its
/// buttons call the plain routes and reload the page. The page also shows
/// what its own script can see of the cookie: nothing, because the session
/// cookie is `HttpOnly`.
pub async fn page(session: &Session) -> Reply {
    let state = async {
        let owner = session.owner().await?;
        let notice = session.take_flash::<String>("notice").await?;
        let count = session.get::<i64>("count").await?.unwrap_or(0);
        let devices = match &owner {
            Some(owner) => {
                let views = sessions_of(session, owner).await?;
                let mut list = String::new();
                for (v, this) in &views {
                    let (id, this) = (v.record_id(), *this);
                    let _ = write!(
                        list,
                        "<li{class}>{short} since {created} UTC{marker} <button onclick=\"go('/sessions/end/{id}')\">End</button></li>",
                        class = if this { " class=\"this\"" } else { "" },
                        short = id.short(),
                        created = v.created_at().time(),
                        marker = if this { " (this browser)" } else { "" },
                    );
                }
                format!(
                    "<h2>Your sessions: <span id=\"session-count\">{}</span></h2>\n<ul id=\"sessions\">{list}</ul>",
                    views.len()
                )
            }
            None => String::new(),
        };
        Ok::<_, session_core::Error>((owner, notice, count, devices))
    }
    .await;
    let (owner, notice, count, devices) = match state {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let who = match &owner {
        Some(user) => format!("Logged in as <b id=\"user\">{}</b>", html_escape(user)),
        None => "<span id=\"user\">Not logged in</span>".to_owned(),
    };
    let notice = notice.map_or_else(String::new, |n| {
        format!("<p id=\"notice\">{}</p>\n", html_escape(&n))
    });
    let body = format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sessions demo</title></head>
<body>
<h1>Sessions demo</h1>
{notice}<p>{who}</p>
<p>Counter: <b id="count">{count}</b></p>
<form id="login" onsubmit="go('/login/' + encodeURIComponent(document.getElementById('name').value)); return false;">
  <input id="name" placeholder="user name" autocomplete="off">
  <button id="login-button" type="submit">Log in</button>
</form>
<p>
  <button id="incr" onclick="go('/incr')">Increment</button>
  <button id="logout" onclick="go('/logout')">Log out</button>
  <button id="destroy" onclick="go('/destroy')">End the session</button>
  <button id="logout-all" onclick="go('/logout-all')">Log out everywhere</button>
</p>
{devices}
<p>What this page's script sees of its cookies: <code id="visible-cookies"></code></p>
<script>
document.getElementById('visible-cookies').textContent = JSON.stringify(document.cookie);
function go(path) {{
  fetch(path, {{ credentials: 'same-origin' }})
    .then(r => r.ok ? location.reload() : r.text().then(t => alert(r.status + ': ' + t)));
}}
</script>
</body>
</html>
"#
    );
    (200, body)
}

/// `/csrf`: a CSRF token for the app's forms, kept in the session and, for
/// the double-submit check, in a cookie of its own; the response also sets
/// cache headers of its own. Each framework's route adds [`CSRF_HEADERS`]
/// (with the token's cookie) to this answer, beside the session's headers:
/// the app's `Set-Cookie` stays, its cacheable `Cache-Control` becomes
/// `no-store` when the response sets the session's id, and `Vary` gains
/// `Cookie`.
///
/// The token stays the session's until a login or logout changes who is
/// signed in (each replaces it), so a second tab's request does not
/// invalidate the forms the first one holds. On a failure the answer is the
/// error alone: no cookie, no cache headers (`None`).
pub async fn csrf(session: &Session) -> (Reply, Option<String>) {
    let answer = async {
        let kept: Option<String> = session.get("csrf").await?;
        let token = match kept {
            Some(token) => token,
            None => {
                let token = session_core::Id::generate()?.to_string();
                session.insert("csrf", &token).await?;
                token
            }
        };
        Ok::<_, session_core::Error>(token)
    }
    .await;
    match answer {
        Ok(token) => {
            // `Secure` as the session's cookie is (`SESSION_SECURE`).
            let secure = if session.manager().config().secure() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!("csrf={token}; Path=/{secure}; SameSite=Strict");
            ((200, token), Some(cookie))
        }
        Err(e) => (fail(&e), None),
    }
}

/// The headers of `/app`'s page beside its `Content-Type`: no other site
/// may frame it (its buttons log out and end sessions: clickjacking), and
/// browsers take its type as given.
pub const PAGE_HEADERS: [(&str, &str); 2] = [
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
];

/// The `Cache-Control` and `Vary` of `/csrf`'s answer, as a handler sets
/// them.
pub const CSRF_HEADERS: [(&str, &str); 2] =
    [("cache-control", "private, max-age=60"), ("vary", "Accept")];

/// `/set`: sets `name = "iris"`.
pub async fn set(session: &Session) -> Reply {
    reply(
        async {
            session.insert("name", "iris").await?;
            Ok(format!(
                "All ok session set to: {}",
                session.get_string("name").await?
            ))
        }
        .await,
    )
}

/// `/get`: reads `name`.
pub async fn get(session: &Session) -> Reply {
    reply(
        async {
            Ok(format!(
                "The name on the /set was: {}",
                session.get_string("name").await?
            ))
        }
        .await,
    )
}

/// `/delete`: removes `name`.
pub async fn delete(session: &Session) -> Reply {
    reply(async { Ok(format!("Deleted name: {}", session.remove("name").await?)) }.await)
}

/// `/clear`: removes every value.
pub async fn clear(session: &Session) -> Reply {
    reply(
        async {
            session.clear().await?;
            Ok("Cleared all values".to_owned())
        }
        .await,
    )
}

/// `/destroy`: ends the session.
pub async fn destroy(session: &Session) -> Reply {
    reply(
        async {
            session.destroy().await?;
            Ok("Destroyed the session".to_owned())
        }
        .await,
    )
}

/// `/incr`: adds one to `count`, exactly, under any concurrency.
pub async fn incr(session: &Session) -> Reply {
    reply(async { Ok(session.increment("count", 1).await?.to_string()) }.await)
}

/// `/login/{user}`: rotates the id, sets the owner and leaves a welcome
/// flash for `/app`. After another user (a shared computer), that user's
/// values go first: `login` drops a signed-in owner's itself, and those of
/// a user who signed out on this browser (a session without an owner, whose
/// values `logout` keeps) the demo clears, knowing who it was from
/// `/logout`. The CSRF token goes too, as at every change of who is signed
/// in. A name
/// `login` would refuse is refused before anything changes, and one that is
/// not valid UTF-8 in the URL (which actix-web and Rocket decode into
/// U+FFFD, and axum refuses) alike on every framework.
pub async fn login(session: &Session, user: &str) -> Reply {
    if user.is_empty() || user.len() > session_core::MAX_OWNER_LEN || user.contains('\0') {
        return (
            400,
            format!(
                "The user name must be 1 to {} bytes, without NUL",
                session_core::MAX_OWNER_LEN
            ),
        );
    }
    if user.contains(char::REPLACEMENT_CHARACTER) {
        return (400, "The user name is not valid UTF-8".into());
    }
    // A new CSRF token for the signed-in user. Over another user's session,
    // signed in or signed out, `login` keeps none of the values that user
    // left.
    if let Err(e) = session.remove("csrf").await {
        return fail(&e);
    }
    match session.login(user).await {
        // A flash for `/app`'s next view, saved by the commit after this
        // handler (the login itself was written at once).
        Ok(()) => reply(
            session
                .insert_flash("notice", format!("Welcome, {user}."))
                .await
                .map(|()| format!("Logged in as {user}")),
        ),
        Err(session_core::Error::Invalid(why)) => (400, why),
        Err(e) => fail(&e),
    }
}

/// The session's owner, or the reply for a request that is not logged in
/// (401) or whose session could not be read.
async fn logged_in(session: &Session) -> Result<String, Reply> {
    match session.owner().await {
        Ok(Some(owner)) => Ok(owner),
        Ok(None) => Err((401, "Not logged in".into())),
        Err(e) => Err(fail(&e)),
    }
}

/// `owner`'s live sessions, each with whether it is `session` itself.
async fn sessions_of(
    session: &Session,
    owner: &str,
) -> session_core::Result<Vec<(session_core::SessionView, bool)>> {
    let this_one = session.record_id().await?;
    let views = session.manager().load_sessions_of(owner).await?;
    Ok(views
        .into_iter()
        .map(|v| {
            let this = Some(v.record_id()) == this_one;
            (v, this)
        })
        .collect())
}

/// `/sessions`: the current owner's live sessions, most recently logged in
/// first, one line each: its record id (what `/sessions/end/{id}` takes), the
/// unix times it started and was last seen (`?` when unknown), and which one
/// is this request's. (A real page would take the ending as a `POST` with
/// CSRF protection; the demo keeps Iris's plain `GET` routes.)
pub async fn sessions(session: &Session) -> Reply {
    let owner = match logged_in(session).await {
        Ok(owner) => owner,
        Err(reply) => return reply,
    };
    reply(
        async {
            let mut out = String::new();
            for (v, this) in sessions_of(session, &owner).await? {
                let _ = writeln!(
                    out,
                    "{} started {} last seen {}{}",
                    v.record_id(),
                    v.created_at().unix_timestamp(),
                    v.last_seen()
                        .map_or_else(|| "?".to_owned(), |t| t.unix_timestamp().to_string()),
                    if this { " (this one)" } else { "" }
                );
            }
            Ok(out)
        }
        .await,
    )
}

/// `/sessions/end/{id}`: ends one session of the current owner by the record
/// id `/sessions` listed; another owner's id ends nothing (404).
pub async fn end_session(session: &Session, id: &str) -> Reply {
    let owner = match logged_in(session).await {
        Ok(owner) => owner,
        Err(reply) => return reply,
    };
    let Ok(id) = id.parse::<session_core::RecordId>() else {
        return (400, "Not a session id".into());
    };
    match session.record_id().await {
        // This very session: destroy also removes its cookie.
        Ok(Some(own)) if own == id => {
            return match session.destroy().await {
                Ok(()) => (200, format!("Ended session {}", id.short())),
                Err(e) => fail(&e),
            }
        }
        Ok(_) => {}
        Err(e) => return fail(&e),
    }
    match session.manager().destroy_session_of(&owner, &id).await {
        Ok(true) => (200, format!("Ended session {}", id.short())),
        Ok(false) => (404, "No such session of yours".into()),
        Err(e) => fail(&e),
    }
}

/// `/logout`: logs the current owner out under a new id; the session's
/// values stay.
pub async fn logout(session: &Session) -> Reply {
    let owner = match logged_in(session).await {
        Ok(owner) => owner,
        Err(reply) => return reply,
    };
    reply(
        async {
            // A new CSRF token for whoever uses the browser next (`logout`
            // keeps who signed out, so that another user's login starts from
            // none of the values).
            session.remove("csrf").await?;
            session.logout().await?;
            Ok(format!("Logged out {owner}"))
        }
        .await,
    )
}

/// `/logout-all`: ends every session of the current owner.
pub async fn logout_all(session: &Session) -> Reply {
    let owner = match logged_in(session).await {
        Ok(owner) => owner,
        Err(reply) => return reply,
    };
    reply(
        async {
            let n = session.manager().destroy_all_of(&owner).await?;
            Ok(format!("Ended {n} session(s) of {owner}"))
        }
        .await,
    )
}
