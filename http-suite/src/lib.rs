//! The HTTP suite: black-box tests of the Iris demo (see `session-demo`) served
//! by a framework adapter on a loopback port, driven by a real HTTP client
//! that keeps its own cookie jar.
//!
//! Written once, run against every adapter with the same cases, so all
//! frameworks behave identically. An adapter's tests provide a function that
//! serves the demo for a given [`Manager`] and returns the address:
//!
//! ```ignore
//! async fn spawn(manager: session_core::Manager) -> std::net::SocketAddr { ... }
//! session_http_suite::http_suite!(spawn);
//! ```
//!
//! Each case builds its own manager over an instrumented store, so it can
//! count store calls and inject faults: the memory store, or `TestStore`
//! where a case needs a store that gathers concurrent updates.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use session_core::testing::Instrumented;
use session_core::{
    Config, ConfigBuilder, CookieKeys, CookieSecurity, Id, Key, Manager, ManualClock, SameSite,
    StoreErrorKind,
};
use session_memory::MemoryStore;

/// Expands into one `#[tokio::test]` per case, each serving the demo with
/// `$spawn`.
#[macro_export]
macro_rules! http_suite {
    ($spawn:path) => {
        $crate::http_suite!(@cases $spawn;
            iris_routes_round_trip,
            default_cookie_attributes,
            configured_cookie_attributes,
            untouched_requests_cost_nothing,
            bad_cookies_never_reach_the_store,
            unknown_ids_are_never_adopted,
            non_ascii_cookies_beside_the_session_keep_it,
            a_stale_cookie_before_the_live_one_keeps_the_session,
            encoded_cookie_names_are_not_the_session,
            head_requests_run_like_gets,
            a_handlers_own_headers_are_kept,
            the_app_page_cannot_be_framed,
            expired_sessions_are_not_revived,
            login_rotates_the_id,
            logout_keeps_the_values_under_a_new_id,
            destroy_invalidates_server_side,
            concurrent_increments_are_exact,
            gathered_increments_are_exact,
            logout_all_ends_every_session_of_the_owner,
            a_devices_page_ends_only_the_owners_sessions,
            store_failure_is_a_clean_5xx,
            failed_save_is_a_bare_503,
            a_failed_commit_after_login_keeps_the_new_id,
            slow_store_times_out,
            a_client_that_leaves_during_the_commit_keeps_its_write,
            header_transport
        );
    };
    (@cases $spawn:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::$case($spawn).await;
            }
        )*
    };
}

/// What an adapter gives the suite: serves the Iris demo (`session-demo`)
/// for a manager on a loopback port and returns the address. Any
/// `async fn(Manager) -> SocketAddr` is one.
pub trait Spawn {
    /// Starts serving and returns the address once it accepts connections.
    fn spawn(&self, manager: Manager) -> impl Future<Output = SocketAddr>;
}

impl<F, Fut> Spawn for F
where
    F: Fn(Manager) -> Fut,
    Fut: Future<Output = SocketAddr>,
{
    fn spawn(&self, manager: Manager) -> impl Future<Output = SocketAddr> {
        self(manager)
    }
}

/// One running demo and what a case needs to look inside it.
struct Demo<S = MemoryStore> {
    addr: SocketAddr,
    store: Instrumented<S>,
    clock: ManualClock,
    manager: Manager,
}

async fn demo(spawn: impl Spawn, config: ConfigBuilder) -> Demo {
    demo_over(spawn, config, MemoryStore::new()).await
}

/// The demo over another store than the memory store.
async fn demo_over<S: session_core::Store>(
    spawn: impl Spawn,
    config: ConfigBuilder,
    inner: S,
) -> Demo<S> {
    let store = Instrumented::new(inner);
    let clock = ManualClock::new();
    let manager = Manager::new(store.clone(), config.build().expect("valid config"))
        .with_clock(clock.clone());
    let addr = spawn.spawn(manager.clone()).await;
    Demo {
        addr,
        store,
        clock,
        manager,
    }
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
    headers: HeaderMap,
}

impl Reply {
    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// A client with a one-cookie jar for the session cookie.
struct Client {
    http: reqwest::Client,
    base: String,
    name: String,
    header: Option<String>,
    /// The session id value the client holds.
    jar: Option<String>,
}

impl Client {
    fn new<S>(demo: &Demo<S>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            base: format!("http://{}", demo.addr),
            name: demo.manager.config().cookie_name().to_owned(),
            header: demo.manager.config().header().map(str::to_owned),
            jar: None,
        }
    }

    /// GET with the jar's cookie; the jar follows `Set-Cookie`.
    async fn get(&mut self, path: &str) -> Reply {
        let value = self.jar.clone();
        let reply = self.send(path, value.as_deref()).await;
        if let Some(h) = &self.header {
            if let Some(v) = reply.header(h) {
                self.jar = (!v.is_empty()).then_some(v);
            }
        }
        for c in reply.set_cookies() {
            let (pair, attrs) = c.split_once(';').unwrap_or((&c, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() != self.name {
                continue;
            }
            let removal = attrs
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            self.jar = (!removal && !value.is_empty()).then(|| value.trim().to_owned());
        }
        reply
    }

    /// GET with exactly this session value (or none); the jar is untouched.
    async fn send(&self, path: &str, value: Option<&str>) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(v) = value {
            req = match &self.header {
                Some(h) => req.header(h.as_str(), v),
                None => req.header("cookie", format!("{}={v}", self.name)),
            };
        }
        Self::reply(req).await
    }

    /// GET with exactly this `Cookie` header, byte for byte (which need not
    /// be ASCII); the jar is untouched.
    async fn send_cookie_header(&self, path: &str, header: &[u8]) -> Reply {
        let value = reqwest::header::HeaderValue::from_bytes(header).expect("header bytes");
        let req = self.http.get(format!("{}{path}", self.base));
        Self::reply(req.header("cookie", value)).await
    }

    /// GET with one `Cookie` header line per entry; the jar is untouched.
    async fn send_cookie_lines(&self, path: &str, lines: &[String]) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for line in lines {
            req = req.header("cookie", line.as_str());
        }
        Self::reply(req).await
    }

    async fn reply(req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await.expect("body");
        Reply {
            status,
            body,
            headers,
        }
    }
}

/// `owner/name` of a session, `-` for either it does not have: what the
/// adapters' own tests answer to tell whose session a handler got.
pub async fn owner_and_name(session: &session_core::Session) -> String {
    let owner = session.owner().await.expect("owner");
    let name = session.get::<String>("name").await.expect("name");
    format!(
        "{}/{}",
        owner.as_deref().unwrap_or("-"),
        name.as_deref().unwrap_or("-")
    )
}

fn plain() -> ConfigBuilder {
    Config::builder()
}

fn attrs(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// `/set /get /delete /clear /destroy` behave as in Iris.
pub async fn iris_routes_round_trip(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    let r = c.get("/set").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "All ok session set to: iris")
    );
    assert!(c.jar.is_some(), "a cookie was issued");
    assert_eq!(c.get("/get").await.body, "The name on the /set was: iris");
    assert_eq!(c.get("/delete").await.body, "Deleted name: true");
    assert_eq!(c.get("/get").await.body, "The name on the /set was: ");
    assert_eq!(c.get("/delete").await.body, "Deleted name: false");
    c.get("/set").await;
    assert_eq!(c.get("/clear").await.body, "Cleared all values");
    assert_eq!(c.get("/get").await.body, "The name on the /set was: ");
    c.get("/set").await;
    let r = c.get("/destroy").await;
    assert_eq!((r.status, r.body.as_str()), (200, "Destroyed the session"));
    assert!(c.jar.is_none(), "destroy removes the cookie");
    assert_eq!(c.get("/get").await.body, "The name on the /set was: ");
}

/// The issued cookie has the secure defaults, and the response is not
/// cacheable.
pub async fn default_cookie_attributes(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    let r = c.get("/set").await;
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let a = attrs(&cookies[0]);
    for want in ["httponly", "samesite=lax", "secure", "path=/"] {
        assert!(
            a.contains(&want.to_owned()),
            "{want} missing in {cookies:?}"
        );
    }
    assert!(
        !a.iter()
            .any(|x| x.starts_with("max-age") || x.starts_with("expires")),
        "browser-session cookie: {cookies:?}"
    );
    assert!(
        !a.iter().any(|x| x.starts_with("domain")),
        "host-only cookie: {cookies:?}"
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r
        .header("vary")
        .is_some_and(|v| v.to_ascii_lowercase().contains("cookie")));
}

/// Configured attributes are issued, and the removal cookie repeats them.
pub async fn configured_cookie_attributes(spawn: impl Spawn) {
    let config = Config::builder()
        .with_cookie_name("sid")
        .with_domain(Some("example.test"))
        .with_path("/")
        .with_same_site(SameSite::Strict)
        .with_persistent_cookie(true);
    let d = demo(spawn, config).await;
    let mut c = Client::new(&d);
    let set = c.get("/set").await.set_cookies();
    assert_eq!(set.len(), 1);
    assert!(set[0].starts_with("sid="), "{set:?}");
    let a = attrs(&set[0]);
    for want in [
        "domain=example.test",
        "samesite=strict",
        "secure",
        "httponly",
        "path=/",
    ] {
        assert!(a.contains(&want.to_owned()), "{want} missing in {set:?}");
    }
    let max_age: u64 = a
        .iter()
        .find_map(|x| x.strip_prefix("max-age="))
        .expect("persistent cookie has Max-Age")
        .parse()
        .expect("numeric Max-Age");
    assert!(max_age > 0 && max_age <= 2 * 3600, "Max-Age {max_age}");
    let removal = c.get("/destroy").await.set_cookies();
    assert_eq!(removal.len(), 1);
    let a = attrs(&removal[0]);
    for want in [
        "domain=example.test",
        "samesite=strict",
        "secure",
        "path=/",
        "max-age=0",
    ] {
        assert!(
            a.contains(&want.to_owned()),
            "{want} missing in removal {removal:?}"
        );
    }
}

/// Requests that do not use the session, or leave a new one empty, send no
/// cookie and make no store call.
pub async fn untouched_requests_cost_nothing(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    let r = c.get("/").await;
    assert!(r.set_cookies().is_empty());
    let r = c.get("/get").await;
    assert_eq!(r.body, "The name on the /set was: ");
    assert!(
        r.set_cookies().is_empty(),
        "an empty new session sends no cookie"
    );
    assert!(r.header("cache-control").is_none());
    assert_eq!(d.store.counts().total(), 0);
    c.get("/set").await;
    let before = d.store.counts();
    let r = c.get("/").await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(
        d.store.counts(),
        before,
        "a route that ignores the session costs no store call"
    );
    let r = c.get("/get").await;
    assert!(r.set_cookies().is_empty(), "reading sends no cookie");
    assert_eq!(
        d.store.counts().total() - before.total(),
        1,
        "reading costs one load"
    );
}

/// Malformed, oversized, tampered and unsigned cookies get a fresh session
/// and never cost a store lookup (signed mode).
pub async fn bad_cookies_never_reach_the_store(spawn: impl Spawn) {
    let config =
        Config::builder().with_security(CookieSecurity::Signed(CookieKeys::new(Key::generate())));
    let d = demo(spawn, config).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let good = c.jar.clone().expect("issued");
    let mut tampered = good.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let unsigned = Id::generate().expect("random").to_string();
    let oversized = "A".repeat(8 * 1024);
    let before = d.store.counts();
    for bad in [
        tampered.as_str(),
        unsigned.as_str(),
        "not-an-id",
        oversized.as_str(),
        "%00%ff",
    ] {
        let r = c.send("/get", Some(bad)).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "The name on the /set was: "),
            "{}",
            &bad[..bad.len().min(20)]
        );
        assert!(r.set_cookies().is_empty());
    }
    assert_eq!(d.store.counts(), before, "no bad cookie reached the store");
    let r = c.send("/set", Some(tampered.as_str())).await;
    assert_eq!(r.status, 200);
    let issued = r.set_cookies();
    assert_eq!(issued.len(), 1);
    assert!(!issued[0].contains(&tampered));
    // The good cookie still works.
    assert_eq!(
        c.send("/get", Some(&good)).await.body,
        "The name on the /set was: iris"
    );
}

/// A well-formed id the server never issued is not adopted (plain mode).
pub async fn unknown_ids_are_never_adopted(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let c = Client::new(&d);
    let chosen = Id::generate().expect("random").to_string();
    let r = c.send("/set", Some(&chosen)).await;
    let issued = r.set_cookies();
    assert_eq!(issued.len(), 1);
    assert!(!issued[0].contains(&chosen), "the client's id was adopted");
    assert_eq!(
        c.send("/get", Some(&chosen)).await.body,
        "The name on the /set was: "
    );
}

/// Cookies with non-ASCII UTF-8 values (a page script's `city=Zürich`) in the
/// same `Cookie` header as the session's hide nothing: the session is read.
pub async fn non_ascii_cookies_beside_the_session_keep_it(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let id = c.jar.clone().expect("issued");
    let header = format!("city=Zürich; {}={id}; note=naïve", c.name);
    let r = c.send_cookie_header("/get", header.as_bytes()).await;
    assert!(r.set_cookies().is_empty(), "a new session was issued");
    assert_eq!(r.body, "The name on the /set was: iris");
}

/// A browser sends every cookie of the name that matches the request (one
/// set for the whole domain beside an older host-only one, say), the stale
/// one perhaps first: the session is still found, whether the two come in
/// one `Cookie` header or in two, and a quoted value is read too. No new id
/// is issued over the live one.
pub async fn a_stale_cookie_before_the_live_one_keeps_the_session(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let live = c.jar.clone().expect("issued");
    let mut other = Client::new(&d);
    other.get("/set").await;
    let stale = other.jar.clone().expect("issued");
    other.get("/destroy").await;
    let name = c.name.clone();
    let check = |r: Reply, sent: &str| {
        assert_eq!(r.body, "The name on the /set was: iris", "{sent}");
        let ours = format!("{name}=");
        for set in r.set_cookies() {
            assert!(
                !set.starts_with(&ours) || set.starts_with(&format!("{ours}{live}")),
                "{sent}: a new id was issued: {set}"
            );
        }
    };
    for header in [
        format!("{name}={stale}; {name}={live}"),
        format!("{name}=\"{live}\""),
    ] {
        check(
            c.send_cookie_header("/get", header.as_bytes()).await,
            &header,
        );
    }
    let lines = [format!("{name}={stale}"), format!("{name}={live}")];
    check(
        c.send_cookie_lines("/get", &lines).await,
        "two Cookie lines",
    );
}

/// A cookie whose name only decodes or trims to the session cookie's
/// (`%73ession`, or the name beside a no-break space) is another cookie and
/// never read as the session. Browsers apply the `__Host-` and `__Secure-`
/// rules only to names that carry the prefix byte for byte, so a sibling
/// subdomain can plant `%5F%5FHost-session` where it cannot plant
/// `__Host-session`; reading the one as the other would put a visitor in
/// the planter's session.
pub async fn encoded_cookie_names_are_not_the_session(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let id = c.jar.clone().expect("issued");
    let encoded: String = c.name.bytes().map(|b| format!("%{b:02X}")).collect();
    let before = d.store.counts();
    for name in [
        encoded,
        format!("%{:02X}{}", c.name.as_bytes()[0], &c.name[1..]),
        format!("\u{a0}{}", c.name),
        format!("{}\u{a0}", c.name),
    ] {
        let header = format!("{name}={id}");
        let r = c.send_cookie_header("/get", header.as_bytes()).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "The name on the /set was: "),
            "{header}"
        );
        // Beside the real cookie, neither hides nor replaces it.
        let header = format!("{name}=junk; {}={id}", c.name);
        let r = c.send_cookie_header("/get", header.as_bytes()).await;
        assert_eq!(r.body, "The name on the /set was: iris", "{header}");
    }
    let mut real_lookups = before;
    real_lookups.load += 4;
    assert_eq!(
        d.store.counts(),
        real_lookups,
        "only the real cookie was looked up"
    );
}

/// A handler's own headers stay beside the session's: its `Set-Cookie` is
/// kept, its cacheable `Cache-Control` becomes `no-store` on a response that
/// sets the session's id, and its `Vary` gains `Cookie`.
pub async fn a_handlers_own_headers_are_kept(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    let r = c.get("/csrf").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with(&format!("csrf={}", r.body))),
        "{cookies:?}"
    );
    assert!(
        cookies.iter().any(|c| c.starts_with("session=")),
        "{cookies:?}"
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let vary = r.header("vary").unwrap_or_default();
    assert!(
        vary.contains("Accept") && vary.to_ascii_lowercase().contains("cookie"),
        "{vary}"
    );
    // The session holds the token the cookie carries.
    let s = d
        .manager
        .session_from_cookies(Some(format!("session={}", c.jar.clone().unwrap()).as_str()));
    assert_eq!(s.get_string("csrf").await.unwrap(), r.body);
    // With the session's id unchanged, the handler's headers are its own.
    let r = c.get("/csrf").await;
    assert_eq!(r.set_cookies().len(), 1, "{:?}", r.set_cookies());
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private, max-age=60")
    );
    assert_eq!(r.header("vary").as_deref(), Some("Accept"));
}

/// `/app`, whose buttons log out and end sessions, cannot be framed by
/// another site (clickjacking), and browsers take its type as given: the
/// same headers on every framework (Rocket's Shield adds its own
/// otherwise).
pub async fn the_app_page_cannot_be_framed(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    let r = c.get("/app").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        r.headers
    );
    let all = |name: &str| -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    assert_eq!(all("x-frame-options"), ["DENY"]);
    assert_eq!(all("x-content-type-options"), ["nosniff"]);
}

/// `HEAD` runs the `GET` handler on every framework: `HEAD /set` starts a
/// session (its cookie is set, no body is sent) that `GET /get` then reads.
pub async fn head_requests_run_like_gets(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let c = Client::new(&d);
    let res = c
        .http
        .head(format!("{}/set", c.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 200);
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("HEAD /set starts a session")
        .to_owned();
    assert!(res.text().await.expect("body").is_empty());
    let pair = set_cookie.split(';').next().unwrap_or_default();
    let id = pair.split_once('=').map(|(_, v)| v).unwrap_or_default();
    assert_eq!(
        c.send("/get", Some(id)).await.body,
        "The name on the /set was: iris"
    );
}

/// A session past its idle timeout reads empty and is never brought back.
pub async fn expired_sessions_are_not_revived(spawn: impl Spawn) {
    let d = demo(
        spawn,
        plain().with_idle_timeout(Some(Duration::from_secs(600))),
    )
    .await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let old = c.jar.clone().expect("issued");
    d.clock.advance(Duration::from_secs(601));
    assert_eq!(c.get("/get").await.body, "The name on the /set was: ");
    c.get("/set").await;
    assert_ne!(
        c.jar.as_deref(),
        Some(old.as_str()),
        "the expired id was reused"
    );
    assert_eq!(
        c.send("/get", Some(&old)).await.body,
        "The name on the /set was: "
    );
}

/// Login issues a new id; the old one stops working.
pub async fn login_rotates_the_id(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let before = c.jar.clone().expect("issued");
    let r = c.get("/login/alice").await;
    assert_eq!((r.status, r.body.as_str()), (200, "Logged in as alice"));
    let after = c.jar.clone().expect("issued");
    assert_ne!(before, after);
    // The login's flash, saved by its commit, shows once.
    assert!(c.get("/app").await.body.contains("Welcome, alice."));
    assert!(!c.get("/app").await.body.contains("Welcome"));
    assert_eq!(c.get("/get").await.body, "The name on the /set was: iris");
    assert_eq!(
        c.send("/get", Some(&before)).await.body,
        "The name on the /set was: "
    );
}

/// `/logout` ends the login under a new id and keeps the values; the
/// signed-in id stops working.
pub async fn logout_keeps_the_values_under_a_new_id(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    assert_eq!(c.get("/logout").await.status, 401, "nobody to log out");
    c.get("/login/alice").await;
    c.get("/set").await;
    assert_eq!(c.get("/incr").await.body, "1");
    let signed_in = c.jar.clone().expect("issued");
    let r = c.get("/logout").await;
    assert_eq!((r.status, r.body.as_str()), (200, "Logged out alice"));
    assert_ne!(c.jar.clone().expect("issued"), signed_in);
    assert_eq!(c.get("/incr").await.body, "2");
    assert_eq!(c.get("/get").await.body, "The name on the /set was: iris");
    assert_eq!(c.get("/sessions").await.status, 401, "no owner any more");
    assert_eq!(
        c.send("/get", Some(&signed_in)).await.body,
        "The name on the /set was: "
    );
}

/// After `/destroy`, replaying the old cookie gives an empty session.
pub async fn destroy_invalidates_server_side(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let old = c.jar.clone().expect("issued");
    c.get("/destroy").await;
    let r = c.send("/get", Some(&old)).await;
    assert_eq!(r.body, "The name on the /set was: ");
    assert!(r.set_cookies().is_empty());
    let r = c.send("/incr", Some(&old)).await;
    assert_eq!(r.body, "1", "a replayed id starts from nothing");
    assert!(!r.set_cookies()[0].contains(&old), "and gets a new id");
}

/// 100 concurrent `/incr` on one session end at exactly 100. The memory
/// store saves each at once (`Store::group_commit` is `false`): one save
/// each, and one for the last.
pub async fn concurrent_increments_are_exact(spawn: impl Spawn) {
    let d = demo(spawn, plain().with_conflict_retries(200)).await;
    increments_are_exact(&d).await;
    assert_eq!(d.store.counts().save, 101);
}

/// The same over a store that gathers concurrent updates into one save
/// (group commit, as Redis, SQL and sled do), so that the saver task runs
/// on the adapter's runtime.
pub async fn gathered_increments_are_exact(spawn: impl Spawn) {
    let d = demo_over(
        spawn,
        plain().with_conflict_retries(200),
        session_core::testing::TestStore::default(),
    )
    .await;
    increments_are_exact(&d).await;
}

async fn increments_are_exact<S>(d: &Demo<S>) {
    let mut c = Client::new(d);
    assert_eq!(c.get("/incr").await.body, "1");
    let cookie = Arc::new(c.jar.clone().expect("issued"));
    let c = Arc::new(c);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move { c.send("/incr", Some(&cookie)).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    assert_eq!(c.send("/incr", Some(&cookie)).await.body, "102");
}

/// `/logout-all` ends every session of the owner, and only those.
pub async fn logout_all_ends_every_session_of_the_owner(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut a = Client::new(&d);
    let mut b = Client::new(&d);
    let mut other = Client::new(&d);
    a.get("/login/carol").await;
    b.get("/login/carol").await;
    other.get("/login/dave").await;
    let r = a.get("/logout-all").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "Ended 2 session(s) of carol")
    );
    assert_eq!(
        b.get("/logout-all").await.status,
        401,
        "b's session was ended too"
    );
    assert_eq!(a.get("/logout-all").await.status, 401);
    assert_eq!(
        other.get("/logout-all").await.body,
        "Ended 1 session(s) of dave"
    );
}

/// `/sessions` lists the owner's sessions and marks this one;
/// `/sessions/end/{id}` ends one of them, never another owner's.
pub async fn a_devices_page_ends_only_the_owners_sessions(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut laptop = Client::new(&d);
    let mut phone = Client::new(&d);
    let mut other = Client::new(&d);
    assert_eq!(laptop.get("/sessions").await.status, 401);
    laptop.get("/login/erin").await;
    phone.get("/login/erin").await;
    other.get("/login/frank").await;
    let listed = laptop.get("/sessions").await;
    assert_eq!(listed.status, 200);
    let lines: Vec<&str> = listed.body.lines().collect();
    assert_eq!(lines.len(), 2, "{}", listed.body);
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("(this one)")).count(),
        1
    );
    let id_of = |line: &str| line.split(' ').next().unwrap_or_default().to_owned();
    let phone_line = phone.get("/sessions").await.body;
    let phone_id = phone_line
        .lines()
        .find(|l| l.ends_with("(this one)"))
        .map(id_of)
        .expect("the phone's own line");
    let frank_id = id_of(other.get("/sessions").await.body.trim());
    // Another owner's id, and a malformed one, end nothing.
    assert_eq!(
        laptop
            .get(&format!("/sessions/end/{frank_id}"))
            .await
            .status,
        404
    );
    assert_eq!(laptop.get("/sessions/end/xyz").await.status, 400);
    let franks = other.get("/sessions").await;
    assert_eq!((franks.status, id_of(franks.body.trim())), (200, frank_id));
    // The laptop ends the phone's session: the phone is logged out.
    let ended = laptop.get(&format!("/sessions/end/{phone_id}")).await;
    assert_eq!(ended.status, 200, "{}", ended.body);
    assert_eq!(phone.get("/sessions").await.status, 401);
    let mine = laptop.get("/sessions").await.body;
    assert_eq!(mine.lines().count(), 1);
    // Ending its own session logs the laptop out and removes its cookie.
    let own = id_of(mine.trim());
    let r = laptop.get(&format!("/sessions/end/{own}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(laptop.jar.is_none(), "the cookie was removed");
    assert_eq!(laptop.get("/sessions").await.status, 401);
}

/// A failing store gives a 5xx with no detail in the body, and the app
/// recovers when the store does.
pub async fn store_failure_is_a_clean_5xx(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    d.store.fail_with(Some(StoreErrorKind::Unavailable));
    for path in ["/get", "/set", "/incr", "/destroy"] {
        let r = c.get(path).await;
        assert!(r.status >= 500, "{path}: {}", r.status);
        assert!(
            !r.body.contains("injected") && !r.body.contains("store"),
            "{path} leaked {:?}",
            r.body
        );
    }
    d.store.fail_with(None);
    assert_eq!(c.get("/get").await.body, "The name on the /set was: iris");
}

/// A handler that succeeded but whose session could not be saved answers a
/// bare, uncacheable 503 (the status a handler gets for the same store
/// error): no cookie and not the handler's body. (`/set` on a new session
/// calls the store only at the commit.)
pub async fn failed_save_is_a_bare_503(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    d.store.fail_with(Some(StoreErrorKind::Unavailable));
    let r = c.get("/set").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.set_cookies().is_empty());
    assert!(
        !r.body.contains("iris"),
        "the handler's body leaked: {:?}",
        r.body
    );
    assert_eq!(d.store.counts().create, 1);
    d.store.fail_with(None);
    let r = c.get("/set").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.set_cookies().len(), 1);
}

/// A login that was stored but whose commit then failed (`/login` adds a
/// flash, which the commit saves): the 503 still carries the new id, under
/// which the session is logged in, so the client does not keep the id the
/// login retired. Only the flash is lost.
pub async fn a_failed_commit_after_login_keeps_the_new_id(spawn: impl Spawn) {
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    let before = c.jar.clone().expect("issued");
    d.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
    let r = c.get("/login/alice").await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(!r.body.contains("alice"), "the handler's body leaked");
    assert_eq!(r.set_cookies().len(), 1, "no new id with the 503");
    let after = c.jar.clone().expect("issued");
    assert_ne!(before, after);
    assert_eq!(
        d.store.counts().save,
        1,
        "the commit did not try to save the flash"
    );
    d.store.fail_saves_with(None);
    assert_eq!(c.get("/get").await.body, "The name on the /set was: iris");
    let mine = c.get("/sessions").await;
    assert_eq!(mine.status, 200, "not logged in: {:?}", mine.body);
    assert!(!c.get("/app").await.body.contains("Welcome"));
    assert_eq!(
        c.send("/get", Some(&before)).await.body,
        "The name on the /set was: "
    );
}

/// A client that goes away while its request's commit waits for the store:
/// the handler finished, so what it wrote is saved all the same (on axum,
/// hyper drops the request's future; the commit finishes on its own task).
pub async fn a_client_that_leaves_during_the_commit_keeps_its_write(spawn: impl Spawn) {
    use std::io::Write as _;
    let d = demo(spawn, plain()).await;
    let mut c = Client::new(&d);
    assert_eq!(c.get("/set").await.status, 200);
    let value = c.jar.clone().expect("a session cookie");
    // `/delete` removes the name in its commit, which now waits.
    d.store.delay(Some(Duration::from_millis(400)));
    let saves = d.store.counts().save;
    let mut tcp = std::net::TcpStream::connect(d.addr).expect("connect");
    let request = format!(
        "GET /delete HTTP/1.1\r\nhost: localhost\r\ncookie: {}={value}\r\n\r\n",
        c.name
    );
    tcp.write_all(request.as_bytes()).expect("send the request");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while d.store.counts().save == saves && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(d.store.counts().save, saves + 1, "the commit never started");
    // The handler has run and its commit waits for the store: leave.
    tcp.shutdown(std::net::Shutdown::Both).expect("close");
    drop(tcp);
    d.store.delay(None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get("/get").await;
        if r.body == "The name on the /set was: " {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler's write was lost: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A store slower than the store timeout gives a 5xx in bounded time.
pub async fn slow_store_times_out(spawn: impl Spawn) {
    let d = demo(
        spawn,
        plain().with_store_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut c = Client::new(&d);
    c.get("/set").await;
    d.store.delay(Some(Duration::from_secs(20)));
    let started = std::time::Instant::now();
    let r = c.get("/get").await;
    assert!(r.status >= 500, "{}", r.status);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    d.store.delay(None);
    assert_eq!(c.get("/get").await.body, "The name on the /set was: iris");
}

/// With a header transport, the id travels in that header with the same
/// semantics, and no cookie is set.
pub async fn header_transport(spawn: impl Spawn) {
    let d = demo(spawn, plain().with_header(Some("x-session-id"))).await;
    let mut c = Client::new(&d);
    let r = c.get("/set").await;
    assert!(r.set_cookies().is_empty());
    assert!(r.header("x-session-id").is_some_and(|v| !v.is_empty()));
    assert!(r.header("vary").is_some_and(|v| v.contains("x-session-id")));
    let r = c.get("/get").await;
    assert_eq!(r.body, "The name on the /set was: iris");
    assert!(
        r.header("x-session-id").is_none(),
        "unchanged id is not resent"
    );
    let old = c.jar.clone().expect("issued");
    let r = c.get("/destroy").await;
    assert_eq!(r.header("x-session-id").as_deref(), Some(""));
    assert_eq!(
        c.send("/get", Some(&old)).await.body,
        "The name on the /set was: "
    );
}

/// What a [`soak`] run measured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SoakReport {
    /// Requests answered.
    pub requests: u64,
    /// Requests that failed (transport error or a status other than 200).
    pub errors: u64,
    /// Sessions created.
    pub sessions: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Increments acknowledged (200) and lost: `/incr` answered a count other
    /// than the previous one plus one, on a session that had not ended.
    pub lost_increments: u64,
}

/// A bounded-time load of mixed traffic against the demo served for
/// `manager`: 16 clients, each starting sessions (`/set`), reading them
/// (`/get`) and counting in them (`/incr`), for `seconds`. Loopback only;
/// the loop stops by itself.
pub async fn soak(spawn: impl Spawn, manager: Manager, seconds: u64) -> SoakReport {
    let addr = spawn.spawn(manager).await;
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..16u64)
        .map(|t| {
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let base = format!("http://{addr}");
                let mut latencies = Vec::new();
                let (mut errors, mut sessions, mut lost) = (0u64, 0u64, 0u64);
                let mut cookie: Option<String> = None;
                let mut count = 0i64;
                let mut i = t;
                while std::time::Instant::now() < until {
                    i += 1;
                    let path = match (&cookie, i % 10) {
                        (None, _) | (_, 0) => "/set",
                        (_, 1..=5) => "/get",
                        _ => "/incr",
                    };
                    let mut req = http.get(format!("{base}{path}"));
                    if path != "/set" {
                        if let Some(c) = &cookie {
                            req = req.header("cookie", c.as_str());
                        }
                    }
                    let started = std::time::Instant::now();
                    let res = req.send().await;
                    let Ok(res) = res else {
                        errors += 1;
                        continue;
                    };
                    let ok = res.status().as_u16() == 200;
                    let set = res
                        .headers()
                        .get("set-cookie")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.split(';').next().unwrap_or_default().to_owned());
                    let body = res.text().await.unwrap_or_default();
                    latencies.push(started.elapsed());
                    if !ok {
                        errors += 1;
                        continue;
                    }
                    if let Some(c) = set {
                        // A new session (or a fresh one after an eviction).
                        sessions += 1;
                        cookie = Some(c);
                        count = 0;
                    }
                    if path == "/incr" {
                        let n: i64 = body.parse().unwrap_or(-1);
                        if n != count + 1 && n != 1 {
                            lost += 1;
                        }
                        count = n;
                    }
                }
                (latencies, errors, sessions, lost)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut report = SoakReport {
        requests: 0,
        errors: 0,
        sessions: 0,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        lost_increments: 0,
    };
    for t in tasks {
        let (l, e, s, lost) = t.await.expect("client task");
        latencies.extend(l);
        report.errors += e;
        report.sessions += s;
        report.lost_increments += lost;
    }
    latencies.sort_unstable();
    report.requests = latencies.len() as u64;
    if !latencies.is_empty() {
        report.p50 = latencies[latencies.len() / 2];
        report.p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    }
    report
}
