//! Session and cookie configuration, validated when it is built.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use cookie::{Key, SameSite};

use crate::codec::{Codec, MessagePack};
use crate::record::Lifetime;

/// How the id is protected inside the cookie.
///
/// The id is a 256-bit random secret either way, so [`CookieSecurity::Plain`]
/// is safe. The signed and private modes add defence in depth and allow key
/// rotation: they verify with every configured key and sign (or encrypt) with
/// the newest.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum CookieSecurity {
    /// The cookie value is the id itself.
    #[default]
    Plain,
    /// The value is HMAC-SHA256 signed (the `cookie` crate's signed jar).
    /// The signature covers the value, not the cookie's name: give sessions
    /// a key of their own, not one another signed cookie of the app uses
    /// (whose values a client may choose). A value signed for another
    /// cookie still opens no session (an id the client chose is never
    /// adopted); it costs a store load.
    Signed(CookieKeys),
    /// The value is encrypted and authenticated with AES-256-GCM, bound to the
    /// cookie's name (the `cookie` crate's private jar).
    Private(CookieKeys),
}

impl fmt::Debug for CookieSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain => f.write_str("Plain"),
            Self::Signed(k) => write!(f, "Signed({} keys)", k.len()),
            Self::Private(k) => write!(f, "Private({} keys)", k.len()),
        }
    }
}

/// The keys of the signed and private cookie modes: the newest signs, all
/// verify.
///
/// ```
/// use session_core::{CookieKeys, Key};
///
/// let old = Key::generate();
/// let new = Key::generate();
/// // Sign with `new`; cookies signed with `old` keep working until it is removed.
/// let keys = CookieKeys::new(new).with_previous(old);
/// assert_eq!(keys.len(), 2);
/// ```
///
/// `Key::generate()` makes a new key every time the process starts, which
/// invalidates every cookie on restart and differs between instances of the
/// app. In production, load the key, 64 bytes or more, from your secret store
/// or the environment (`Key::try_from` refuses a shorter one; `Key::from`
/// would panic):
///
/// ```
/// use session_core::{Config, CookieKeys, CookieSecurity, Key};
///
/// // e.g. hex-decoded from an environment variable set by your secret store
/// let secret: Vec<u8> = (0..64).collect();
/// let key = Key::try_from(secret.as_slice()).expect("a session key of 64 bytes or more");
/// let config = Config::builder()
///     .with_security(CookieSecurity::Signed(CookieKeys::new(key)))
///     .build()
///     .unwrap();
/// assert!(matches!(config.security(), CookieSecurity::Signed(_)));
/// assert!(Key::try_from(&secret[..32]).is_err());
/// ```
#[derive(Clone)]
pub struct CookieKeys {
    keys: Arc<[Key]>,
}

impl CookieKeys {
    /// Keys with one current key.
    pub fn new(current: Key) -> Self {
        Self {
            keys: Arc::from(vec![current]),
        }
    }

    /// Adds a retired key that still verifies (but never signs) cookies. Remove
    /// it from the configuration once its cookies have expired.
    pub fn with_previous(self, previous: Key) -> Self {
        let mut keys = self.keys.to_vec();
        keys.push(previous);
        Self {
            keys: Arc::from(keys),
        }
    }

    /// The key that signs or encrypts new cookies.
    pub fn current(&self) -> &Key {
        &self.keys[0]
    }

    /// Every key, current first.
    pub fn all(&self) -> &[Key] {
        &self.keys
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: there is always a current key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CookieKeys({} keys)", self.keys.len())
    }
}

/// A configuration that cannot work, found when it is built.
///
/// It converts into [`std::io::Error`] (`InvalidInput`), so `?` works in a
/// `main` that returns `std::io::Result`, as servers' often do:
///
/// ```
/// use session_core::Config;
///
/// fn main() -> std::io::Result<()> {
///     let config = Config::builder().with_secure(false).build()?;
///     assert!(!config.secure());
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session configuration: {0}")]
pub struct ConfigError(String);

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// Session and cookie settings. Build one with [`Config::builder`]; the
/// defaults are the safe choice.
///
/// | setting | default |
/// |---|---|
/// | cookie name | `session` |
/// | path | `/` |
/// | domain | none (host-only cookie: subdomains do not get it) |
/// | `Secure` | on |
/// | `HttpOnly` | on |
/// | `SameSite` | `Lax` |
/// | persistent cookie (`Max-Age`) | off: a browser-session cookie |
/// | `Partitioned` | off |
/// | idle timeout | 2 hours |
/// | absolute timeout | 24 hours |
/// | touch interval | 60 seconds (at most half the idle timeout) |
/// | store timeout | 5 seconds |
/// | conflict retries | 16 |
/// | sessions per owner | no cap |
/// | cookie security | [`CookieSecurity::Plain`] |
/// | longest cookie value accepted | 4 096 bytes |
/// | id carried in | the cookie (a header with [`ConfigBuilder::with_header`]) |
/// | codec | [`MessagePack`] |
///
/// ```
/// use std::time::Duration;
/// use session_core::Config;
///
/// let config = Config::builder()
///     .with_cookie_name("__Host-sid")
///     .with_idle_timeout(Some(Duration::from_secs(30 * 60)))
///     .build()
///     .unwrap();
/// assert_eq!(config.cookie_name(), "__Host-sid");
///
/// // `__Host-` cookies must not have a Domain.
/// let err = Config::builder()
///     .with_cookie_name("__Host-sid")
///     .with_domain(Some("example.com"))
///     .build()
///     .unwrap_err();
/// assert!(err.to_string().contains("__Host-"));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) cookie_name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) partitioned: bool,
    pub(crate) lifetime: Lifetime,
    pub(crate) touch_interval: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) conflict_retries: u32,
    pub(crate) max_sessions_per_owner: Option<usize>,
    pub(crate) security: CookieSecurity,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) max_cookie_len: usize,
    pub(crate) header: Option<String>,
    /// The cookie's fixed attributes as `Set-Cookie` writes them (`; HttpOnly;
    /// SameSite=Lax; Path=/`...), rendered once on first use.
    pub(crate) cookie_attributes: std::sync::OnceLock<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cookie_name: "session".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            partitioned: false,
            lifetime: Lifetime::new()
                .with_idle_timeout(Some(Duration::from_secs(2 * 3600)))
                .with_absolute_timeout(Some(Duration::from_secs(24 * 3600))),
            touch_interval: Duration::from_secs(60),
            store_timeout: Duration::from_secs(5),
            conflict_retries: 16,
            max_sessions_per_owner: None,
            security: CookieSecurity::Plain,
            codec: Arc::new(MessagePack),
            max_cookie_len: 4096,
            header: None,
            cookie_attributes: std::sync::OnceLock::new(),
        }
    }
}

impl Config {
    /// Starts from the defaults in the table above.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Self::default(),
            idle_set: false,
        }
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }
    /// The cookie's `Path`.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The cookie's `Domain`, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }
    /// Whether the cookie is `Secure`.
    pub fn secure(&self) -> bool {
        self.secure
    }
    /// Whether the cookie is `HttpOnly`.
    pub fn http_only(&self) -> bool {
        self.http_only
    }
    /// The cookie's `SameSite`.
    pub fn same_site(&self) -> SameSite {
        self.same_site
    }
    /// Whether the cookie is `Partitioned` (CHIPS).
    pub fn partitioned(&self) -> bool {
        self.partitioned
    }
    /// The default lifetime of sessions (timeouts and cookie persistence).
    pub fn lifetime(&self) -> Lifetime {
        self.lifetime
    }
    /// The minimum movement of the idle deadline that is written to the store.
    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
    }
    /// The limit on every store call.
    pub fn store_timeout(&self) -> Duration {
        self.store_timeout
    }
    /// How many times a conflicting save is retried.
    pub fn conflict_retries(&self) -> u32 {
        self.conflict_retries
    }
    /// How many sessions one owner may have at once, if capped.
    pub fn max_sessions_per_owner(&self) -> Option<usize> {
        self.max_sessions_per_owner
    }
    /// How the cookie value is protected.
    pub fn security(&self) -> &CookieSecurity {
        &self.security
    }
    /// The codec of session values.
    pub fn codec(&self) -> &dyn Codec {
        &*self.codec
    }
    /// Cookie values longer than this are rejected unread.
    pub fn max_cookie_len(&self) -> usize {
        self.max_cookie_len
    }
    /// The request/response header that carries the id instead of a cookie,
    /// if one is configured (lowercase).
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] checks it.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConfigBuilder {
    config: Config,
    /// The idle timeout was set (not the default): it must then take effect
    /// within the absolute timeout.
    idle_set: bool,
}

impl ConfigBuilder {
    /// The cookie's name. Default `session`. Names starting with `__Host-` or
    /// `__Secure-` get the browser rules of those prefixes checked at build.
    ///
    /// ```
    /// use session_core::Config;
    ///
    /// // `__Host-`: the browser refuses the cookie unless it is Secure, on `/`
    /// // and host-only, so a sibling subdomain cannot plant one of this name.
    /// let config = Config::builder().with_cookie_name("__Host-session").build()?;
    /// assert_eq!(config.cookie_name(), "__Host-session");
    /// assert!(Config::builder()
    ///     .with_cookie_name("__Host-session")
    ///     .with_domain(Some("example.com"))
    ///     .build()
    ///     .is_err());
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    #[doc(alias("with_name", "cookie_name"))]
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.config.cookie_name = name.into();
        self
    }

    /// The cookie's `Path`. Default `/`.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }

    /// The cookie's `Domain`. Default none: a host-only cookie that
    /// subdomains do not receive.
    ///
    /// Setting the parent domain (`example.com`) shares the session with every
    /// subdomain: this is Iris's default "subdomain persistence", off here.
    ///
    /// [`build`](ConfigBuilder::build) refuses what is not a host name. It
    /// does not know the public suffixes (`com`, `co.uk`, `github.io`):
    /// browsers drop a cookie whose `Domain` is one (unless it is the
    /// request's very host), so every request would start a new session.
    ///
    /// ```
    /// use session_core::Config;
    ///
    /// // One session for example.com, app.example.com and shop.example.com.
    /// let config = Config::builder().with_domain(Some("example.com")).build()?;
    /// assert_eq!(config.domain(), Some("example.com"));
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    #[doc(alias("cookie_domain"))]
    pub fn with_domain(mut self, domain: Option<&str>) -> Self {
        self.config.domain = domain.map(str::to_owned);
        self
    }

    /// Whether the cookie is `Secure` (sent over HTTPS only). Default on.
    ///
    /// # Warning
    /// Turn this off only for plain-HTTP local development: without it the
    /// session id travels in clear text on every request.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.config.secure = secure;
        self
    }

    /// Whether the cookie is `HttpOnly` (hidden from page scripts). Default on.
    ///
    /// # Warning
    /// Turning this off lets any script injected into a page steal the session.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.config.http_only = http_only;
        self
    }

    /// The cookie's `SameSite`. Default `Lax`. `None` requires `Secure`.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.config.same_site = same_site;
        self
    }

    /// Whether the cookie is `Partitioned` (CHIPS). Default off; requires
    /// `Secure`.
    pub fn with_partitioned(mut self, partitioned: bool) -> Self {
        self.config.partitioned = partitioned;
        self
    }

    /// Whether the cookie carries `Max-Age` and survives a browser restart.
    /// Default off: a browser-session cookie.
    #[doc(alias("session_lifecycle", "PersistentSession"))]
    pub fn with_persistent_cookie(mut self, persistent: bool) -> Self {
        self.config.lifetime = self.config.lifetime.with_persistent_cookie(persistent);
        self
    }

    /// Ends a session after this long without a request that uses it. Default
    /// 2 hours. `None` disables the idle timeout.
    ///
    /// An idle timeout set here must not exceed the absolute timeout, which
    /// would end every session first: a long one needs a longer absolute
    /// timeout too, or none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::Config;
    ///
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// // Over the default absolute timeout (24 hours): refused, saying so.
    /// assert!(Config::builder().with_idle_timeout(Some(week)).build().is_err());
    /// let config = Config::builder()
    ///     .with_idle_timeout(Some(week))
    ///     .with_absolute_timeout(Some(4 * week))
    ///     .build()?;
    /// assert_eq!(config.lifetime().idle_timeout(), Some(week));
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    #[doc(alias("with_expiry", "session_ttl", "expires"))]
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_set = true;
        self.config.lifetime = self.config.lifetime.with_idle_timeout(idle);
        self
    }

    /// Ends a session this long after its creation, whatever its activity.
    /// Default 24 hours. `None` disables the absolute timeout.
    pub fn with_absolute_timeout(mut self, absolute: Option<Duration>) -> Self {
        self.config.lifetime = self.config.lifetime.with_absolute_timeout(absolute);
        self
    }

    /// The idle deadline is written to the store only when it would move by at
    /// least this much, so read-heavy traffic does not write on every request.
    /// Default 60 seconds. A session keeps its idle deadline as long as it is
    /// used at least every idle timeout minus this interval; for a session
    /// whose idle timeout is under twice the interval (this config's, or a
    /// per-session [`Lifetime`]'s), half its idle timeout is used instead, so
    /// such a session stays alive when used at least every half idle timeout.
    /// A short idle timeout therefore needs no change here:
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::Config;
    ///
    /// let config = Config::builder()
    ///     .with_idle_timeout(Some(Duration::from_secs(30))) // touches every 15 s
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(config.touch_interval(), Duration::from_secs(60)); // as configured
    /// ```
    ///
    /// "Used" means loaded: whether a request's commit extends the deadline
    /// is decided by the time the request loaded the session (it reads the
    /// clock once), so a request that runs longer than half the idle timeout
    /// (a long poll of 40 s under a 60 s idle timeout) may leave the deadline
    /// where it was. Give sessions used that way an idle timeout well over
    /// twice the request's duration.
    pub fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.config.touch_interval = interval;
        self
    }

    /// The limit on every store call; past it the request gets
    /// [`Error::Timeout`](crate::Error::Timeout). Default 5 seconds;
    /// `Duration::MAX` (or any limit too far away to represent) sets none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::Config;
    ///
    /// // A request whose store does not answer within a second gets a 503.
    /// let config = Config::builder()
    ///     .with_store_timeout(Duration::from_secs(1))
    ///     .build()?;
    /// assert_eq!(config.store_timeout(), Duration::from_secs(1));
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// How many times a save that lost a compare-and-set race is re-applied
    /// before [`Error::Contention`](crate::Error::Contention). Default 16, at
    /// most [`MAX_CONFLICT_RETRIES`].
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.config.conflict_retries = retries;
        self
    }

    /// Caps the sessions one owner may have: when a login goes past the cap,
    /// the owner's least recently used sessions end. Default none (no cap).
    /// Must be at least 1.
    ///
    /// ```
    /// use session_core::Config;
    ///
    /// // At most three devices signed in at once; a fourth login ends the
    /// // least recently used.
    /// let config = Config::builder().with_max_sessions_per_owner(Some(3)).build()?;
    /// assert_eq!(config.max_sessions_per_owner(), Some(3));
    /// assert!(Config::builder().with_max_sessions_per_owner(Some(0)).build().is_err());
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    ///
    /// Last use is read from each session's idle deadline, so it is known
    /// to within the touch interval (behind a shared `CachedStore`, as of
    /// its copy); a session without an idle timeout, or whose idle deadline
    /// the absolute one caps, counts as last used when it was created (or
    /// when the cap stopped its deadline). Ties go by creation, oldest
    /// first.
    ///
    /// Each login of an owner lists the owner's sessions; past the cap, it
    /// loads them, and deletes the least recently used, eight calls at a
    /// time, as far as the store allows: when the store fails then, the
    /// login stands (the error is logged) and the owner's next login
    /// enforces the cap. A login ends only sessions created before its own,
    /// so two logins at once never end each other's: the later one ends
    /// the earlier one's if it has to. Known limits: a session whose id
    /// another request is cycling at that moment is two records (old and
    /// new) until the old one is retired, counts twice, and may be the one
    /// to end; and two logins at once, each seeing the other's session, can
    /// each end a different one of the others, one more than the cap asks.
    pub fn with_max_sessions_per_owner(mut self, max: Option<usize>) -> Self {
        self.config.max_sessions_per_owner = max;
        self
    }

    /// How the cookie value is protected. Default [`CookieSecurity::Plain`].
    pub fn with_security(mut self, security: CookieSecurity) -> Self {
        self.config.security = security;
        self
    }

    /// Signs the cookie with `key` (HMAC-SHA256), a key for sessions alone
    /// (see [`CookieSecurity::Signed`]): the same as
    /// `with_security(CookieSecurity::Signed(CookieKeys::new(key)))`. To
    /// rotate keys, pass [`CookieKeys`] with
    /// [`with_previous`](CookieKeys::with_previous) to
    /// [`with_security`](Self::with_security).
    ///
    /// ```
    /// use session_core::{Config, CookieSecurity, Key};
    ///
    /// let config = Config::builder().with_signed(Key::generate()).build()?;
    /// assert!(matches!(config.security(), CookieSecurity::Signed(_)));
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    pub fn with_signed(self, key: Key) -> Self {
        self.with_security(CookieSecurity::Signed(CookieKeys::new(key)))
    }

    /// Encrypts the cookie with `key` (AES-256-GCM, bound to the cookie's
    /// name): the same as
    /// `with_security(CookieSecurity::Private(CookieKeys::new(key)))`.
    ///
    /// ```
    /// use session_core::{Config, CookieSecurity, Key};
    ///
    /// let config = Config::builder().with_private(Key::generate()).build()?;
    /// assert!(matches!(config.security(), CookieSecurity::Private(_)));
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    pub fn with_private(self, key: Key) -> Self {
        self.with_security(CookieSecurity::Private(CookieKeys::new(key)))
    }

    /// The codec of session values. Default [`MessagePack`].
    pub fn with_codec(mut self, codec: impl Codec) -> Self {
        self.config.codec = Arc::new(codec);
        self
    }

    /// Cookie values longer than this many bytes are rejected without being
    /// parsed. Default 4096; at least 64, and at least what the cookie mode
    /// issues (87 bytes signed, 96 private).
    pub fn with_max_cookie_len(mut self, len: usize) -> Self {
        self.config.max_cookie_len = len;
        self
    }

    /// Carries the id in this request and response header instead of a
    /// cookie, for API and mobile clients. Default none (a cookie). The
    /// semantics are the cookie's: the response carries the header only when
    /// the client must change what it sends, and an empty value tells it to
    /// forget the id.
    ///
    /// ```
    /// use session_core::Config;
    ///
    /// let config = Config::builder().with_header(Some("X-Session")).build()?;
    /// assert_eq!(config.header(), Some("x-session"));
    /// // The session's own headers, and those that frame a message, are refused.
    /// assert!(Config::builder().with_header(Some("Cookie")).build().is_err());
    /// # Ok::<(), session_core::ConfigError>(())
    /// ```
    pub fn with_header(mut self, name: Option<&str>) -> Self {
        self.config.header = name.map(str::to_ascii_lowercase);
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the rule broken: an invalid cookie name, path or
    /// domain (a host name or an IPv4 address, nothing else), `__Host-`
    /// without `Secure`/`Path=/` or with a `Domain`, `__Secure-`,
    /// `SameSite=None` or `Partitioned` without `Secure`, `__Http-` or
    /// `__Host-Http-` without `Secure` and `HttpOnly` (prefixes in any case),
    /// no timeout at all or one shorter than a second or longer than 400
    /// days, an idle timeout set longer than the absolute one, a zero store
    /// timeout, an invalid or reserved id header name (the session's own
    /// headers and those that frame the message, such as `Content-Length`),
    /// more than [`MAX_CONFLICT_RETRIES`] conflict retries, zero sessions
    /// per owner, a cookie path over 1024 bytes or a cookie name and
    /// value over 4096 bytes together (browsers drop or rescope such
    /// cookies), or a maximum cookie length under 64 bytes or
    /// under the length of the cookies the configured mode issues.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        let err = |m: String| Err(ConfigError(m));
        if !is_token(&c.cookie_name) {
            return err(format!(
                "cookie name {:?} must be a non-empty HTTP token (no spaces, separators or control characters)",
                c.cookie_name
            ));
        }
        // Browsers match a cookie's path against the request's path as sent,
        // percent-encoded: a path of other than visible ASCII never matches.
        if !c.path.starts_with('/') || c.path.bytes().any(|b| b == b';' || !b.is_ascii_graphic()) {
            return err(format!(
                "cookie path {:?} must start with '/' and hold visible ASCII without ';' (percent-encode the rest, as requests send it)",
                c.path
            ));
        }
        if let Some(d) = &c.domain {
            if !is_cookie_domain(d) {
                return err(format!(
                    "cookie domain {d:?} must be a host name (letters, digits, '-' and '_' in dot-separated labels, an optional leading dot; no scheme, port or path; a non-ASCII name in its xn-- form) or an IPv4 address"
                ));
            }
        }
        // Browsers match the prefixes whatever their case (RFC 6265bis), and
        // drop a cookie that breaks their rules without a word.
        let prefixed = |prefix: &str| {
            c.cookie_name
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        };
        if prefixed("__Host-") {
            if !c.secure {
                return err(
                    "a __Host- cookie must be Secure; remove with_secure(false) or the prefix"
                        .into(),
                );
            }
            if c.path != "/" {
                return err("a __Host- cookie must have Path=/".into());
            }
            if c.domain.is_some() {
                return err("a __Host- cookie must not have a Domain".into());
            }
        }
        if prefixed("__Secure-") && !c.secure {
            return err("a __Secure- cookie must be Secure".into());
        }
        if (prefixed("__Http-") || prefixed("__Host-Http-")) && !(c.secure && c.http_only) {
            return err("an __Http- or __Host-Http- cookie must be Secure and HttpOnly".into());
        }
        if c.same_site == SameSite::None && !c.secure {
            return err(
                "SameSite=None requires Secure (browsers drop the cookie otherwise)".into(),
            );
        }
        if c.partitioned && !c.secure {
            return err("Partitioned requires Secure".into());
        }
        validate_lifetime(&c.lifetime).map_err(ConfigError)?;
        if self.idle_set {
            idle_within_absolute(&c.lifetime).map_err(ConfigError)?;
        }
        if c.store_timeout.is_zero() {
            return err("store timeout must be greater than zero".into());
        }
        if let Some(h) = &c.header {
            if !is_token(h) {
                return err(format!("header name {h:?} must be a non-empty HTTP token"));
            }
            if RESERVED_HEADERS.contains(&h.as_str()) {
                return err(format!(
                    "header name {h:?} is reserved: the session's own headers, or one that frames or routes the message"
                ));
            }
        }
        if c.conflict_retries > MAX_CONFLICT_RETRIES {
            return err(format!(
                "conflict retries must be at most {MAX_CONFLICT_RETRIES}: each waits up to 64 ms, so more would hold a contended request for minutes"
            ));
        }
        if c.max_sessions_per_owner == Some(0) {
            return err("max sessions per owner must be at least 1".into());
        }
        if c.max_cookie_len < 64 {
            return err("max cookie length must be at least 64 bytes".into());
        }
        let protected = crate::transport::protected_len(&c.security);
        if c.header.is_none() {
            // RFC 6265bis: browsers ignore an attribute value over 1024
            // bytes (a path then defaults to the request's directory, which
            // the removal cookie, sent from another page, does not match)
            // and drop a cookie whose name and value exceed 4096 bytes.
            if c.path.len() > 1024 {
                return err(format!(
                    "cookie path of {} bytes is over the 1024 browsers keep",
                    c.path.len()
                ));
            }
            if c.cookie_name.len() + protected > 4096 {
                return err(format!(
                    "cookie name of {} bytes and its {protected}-byte value are over the 4096 bytes browsers keep",
                    c.cookie_name.len()
                ));
            }
        }
        if c.max_cookie_len < protected {
            let mode = match c.security {
                CookieSecurity::Plain => "plain",
                CookieSecurity::Signed(_) => "signed",
                CookieSecurity::Private(_) => "private",
            };
            return err(format!(
                "max cookie length {} is shorter than the {mode} cookie values this configuration issues ({protected} bytes): every session would be lost on its next request",
                c.max_cookie_len
            ));
        }
        Ok(c)
    }
}

/// The most retries [`ConfigBuilder::with_conflict_retries`] accepts: each
/// waits a random pause of up to 64 ms, so this many keep a request that
/// keeps losing the race for about a minute at most.
pub const MAX_CONFLICT_RETRIES: u32 = 1000;

/// Header names the id may not travel in: the ones the session writes
/// itself, and the ones that frame, route or describe the message (writing
/// the id into them would break the response).
const RESERVED_HEADERS: &[&str] = &[
    "cookie",
    "set-cookie",
    "cache-control",
    "vary",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "expect",
    "host",
    "keep-alive",
    "location",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `d` can be a cookie's `Domain`: a host name of dot-separated
/// labels (letters, digits, `-` and `_`, none empty or over 63 bytes, none
/// starting or ending with `-`), with at most one leading dot and no trailing
/// one, or an IPv4 address. Anything else (a scheme, a port, a path, a
/// non-ASCII name, a lone dot) never matches a request's host, so browsers
/// would drop every cookie.
fn is_cookie_domain(d: &str) -> bool {
    let host = d.strip_prefix('.').unwrap_or(d);
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return !d.starts_with('.');
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `s` is an HTTP token (RFC 9110): what cookie and header names are.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Rules every lifetime (configured or per session) obeys.
pub(crate) fn validate_lifetime(l: &Lifetime) -> Result<(), String> {
    if l.idle_timeout().is_none() && l.absolute_timeout().is_none() {
        return Err("at least one of the idle and absolute timeouts must be set: sessions that never expire are refused".into());
    }
    for d in [l.idle_timeout(), l.absolute_timeout()]
        .into_iter()
        .flatten()
    {
        if d < Duration::from_secs(1) {
            return Err(format!("timeout {d:?} is shorter than one second"));
        }
        if d > Duration::from_secs(400 * 24 * 3600) {
            return Err(format!(
                "timeout {d:?} is longer than 400 days, the longest cookie browsers keep"
            ));
        }
    }
    Ok(())
}

/// An idle timeout that is set must take effect: one longer than the
/// absolute timeout never would (a remember-me of 30 days idle under the
/// default 24 hours absolute ends after a day).
pub(crate) fn idle_within_absolute(l: &Lifetime) -> Result<(), String> {
    match (l.idle_timeout(), l.absolute_timeout()) {
        (Some(idle), Some(absolute)) if idle > absolute => Err(format!(
            "idle timeout {idle:?} is longer than the absolute timeout {absolute:?}, which would end every session first: lengthen or remove the absolute timeout"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_secure_and_valid() {
        let c = Config::builder().build().unwrap();
        assert!(c.secure() && c.http_only());
        assert_eq!(c.same_site(), SameSite::Lax);
        assert!(!c.lifetime().persistent_cookie());
        assert!(c.lifetime().idle_timeout().is_some());
        assert!(c.lifetime().absolute_timeout().is_some());
    }

    #[test]
    fn domain_and_header_are_set_and_taken_back_with_none() {
        let set = Config::builder()
            .with_domain(Some("example.com"))
            .with_header(Some("X-Session"));
        let c = set.clone().build().unwrap();
        assert_eq!(
            (c.domain(), c.header()),
            (Some("example.com"), Some("x-session"))
        );
        let c = set.with_domain(None).with_header(None).build().unwrap();
        assert_eq!((c.domain(), c.header()), (None, None));
    }

    #[test]
    fn a_config_error_is_an_invalid_input_io_error() {
        let error = Config::builder().with_cookie_name("").build().unwrap_err();
        let io = std::io::Error::from(error.clone());
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(io.to_string(), error.to_string());
    }

    #[test]
    fn signed_and_private_shorthands_set_one_current_key() {
        let key = Key::generate();
        let signed = Config::builder().with_signed(key.clone()).build().unwrap();
        let private = Config::builder().with_private(key.clone()).build().unwrap();
        match (signed.security(), private.security()) {
            (CookieSecurity::Signed(s), CookieSecurity::Private(p)) => {
                assert_eq!((s.len(), p.len()), (1, 1));
                assert_eq!(s.current().master(), key.master());
                assert_eq!(p.current().master(), key.master());
            }
            other => panic!("{other:?}"),
        }
    }

    /// The longest path and name browsers keep are accepted; one byte more
    /// is not (above), and the header transport sends no cookie to limit.
    #[test]
    fn the_longest_cookie_browsers_keep_is_accepted() {
        let longest = 4096 - crate::id::ID_TEXT_LEN;
        Config::builder()
            .with_path(format!("/{}", "a".repeat(1023)))
            .with_cookie_name("s".repeat(longest))
            .build()
            .unwrap();
        Config::builder()
            .with_cookie_name("s".repeat(longest + 1))
            .with_header(Some("x-session"))
            .build()
            .unwrap();
    }

    #[test]
    fn invalid_combinations_are_rejected_with_a_reason() {
        let cases: Vec<(ConfigBuilder, &str)> = vec![
            (Config::builder().with_cookie_name(""), "HTTP token"),
            (Config::builder().with_cookie_name("a b"), "HTTP token"),
            (Config::builder().with_cookie_name("a;b"), "HTTP token"),
            (Config::builder().with_path("x"), "start with '/'"),
            (Config::builder().with_path("/caf\u{e9}"), "visible ASCII"),
            (Config::builder().with_path("/a b"), "visible ASCII"),
            (Config::builder().with_path("/a;b"), "visible ASCII"),
            (Config::builder().with_domain(Some("a;b")), "domain"),
            (
                Config::builder().with_path(format!("/{}", "a".repeat(1024))),
                "1024",
            ),
            (
                Config::builder().with_cookie_name("s".repeat(4096 - crate::id::ID_TEXT_LEN + 1)),
                "4096",
            ),
            (
                Config::builder()
                    .with_cookie_name("__Host-x")
                    .with_secure(false),
                "must be Secure",
            ),
            (
                Config::builder()
                    .with_cookie_name("__Host-x")
                    .with_path("/app"),
                "Path=/",
            ),
            (
                Config::builder()
                    .with_cookie_name("__Host-x")
                    .with_domain(Some("example.com")),
                "Domain",
            ),
            (
                Config::builder()
                    .with_cookie_name("__Secure-x")
                    .with_secure(false),
                "must be Secure",
            ),
            (
                Config::builder()
                    .with_same_site(SameSite::None)
                    .with_secure(false),
                "SameSite=None",
            ),
            (
                Config::builder().with_partitioned(true).with_secure(false),
                "Partitioned",
            ),
            (
                Config::builder()
                    .with_idle_timeout(None)
                    .with_absolute_timeout(None),
                "never expire",
            ),
            (
                Config::builder().with_idle_timeout(Some(Duration::from_millis(999))),
                "shorter than one second",
            ),
            (
                Config::builder()
                    .with_absolute_timeout(Some(Duration::from_secs(400 * 24 * 3600 + 1))),
                "longer than 400 days",
            ),
            (
                Config::builder().with_store_timeout(Duration::ZERO),
                "store timeout",
            ),
            (Config::builder().with_header(Some("x y")), "HTTP token"),
            (
                Config::builder().with_header(Some("Set-Cookie")),
                "reserved",
            ),
            (
                Config::builder().with_header(Some("Content-Length")),
                "reserved",
            ),
            (
                Config::builder().with_conflict_retries(MAX_CONFLICT_RETRIES + 1),
                "conflict retries",
            ),
            (
                Config::builder().with_header(Some("transfer-encoding")),
                "reserved",
            ),
            (
                Config::builder()
                    .with_cookie_name("__host-x")
                    .with_domain(Some("example.com")),
                "Domain",
            ),
            (
                Config::builder()
                    .with_cookie_name("__SECURE-x")
                    .with_secure(false),
                "must be Secure",
            ),
            (
                Config::builder()
                    .with_cookie_name("__Http-x")
                    .with_http_only(false),
                "HttpOnly",
            ),
            (
                Config::builder()
                    .with_cookie_name("__Host-Http-x")
                    .with_http_only(false),
                "HttpOnly",
            ),
            (
                Config::builder().with_idle_timeout(Some(Duration::from_secs(7 * 24 * 3600))),
                "longer than the absolute timeout",
            ),
        ];
        for (builder, needle) in cases {
            let msg = builder.build().unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
    }

    #[test]
    fn timeouts_of_one_second_and_of_400_days_are_accepted() {
        let c = Config::builder()
            .with_idle_timeout(Some(Duration::from_secs(1)))
            .with_absolute_timeout(Some(Duration::from_secs(400 * 24 * 3600)))
            .build()
            .unwrap();
        assert_eq!(c.lifetime().idle_timeout(), Some(Duration::from_secs(1)));
    }

    /// A `Domain` that can never match a request's host (browsers would drop
    /// every cookie) is refused; host names and IPv4 addresses are taken.
    #[test]
    fn only_host_names_are_cookie_domains() {
        for bad in [
            "",
            ".",
            "..example.com",
            "https://example.com",
            "example.com:8080",
            "example.com/app",
            "a,b.com",
            "bücher.de",
            "example..com",
            "example.com.",
            "-example.com",
            "example-.com",
            "a b.com",
            "a;b",
            ".10.0.0.1",
            &"a".repeat(64),
        ] {
            let built = Config::builder().with_domain(Some(bad)).build();
            assert!(built.is_err(), "{bad:?} was accepted");
        }
        for good in [
            "example.com",
            ".example.com",
            "EXAMPLE.com",
            "localhost",
            "xn--bcher-kva.de",
            "my_host.internal",
            "10.0.0.1",
            &"a".repeat(63),
        ] {
            let built = Config::builder().with_domain(Some(good)).build();
            assert!(built.is_ok(), "{good:?} was refused: {built:?}");
        }
    }

    #[test]
    fn an_idle_timeout_up_to_the_absolute_one_is_accepted() {
        let day = Duration::from_secs(24 * 3600);
        for (idle, absolute) in [(day, day), (day * 7, day * 30)] {
            Config::builder()
                .with_idle_timeout(Some(idle))
                .with_absolute_timeout(Some(absolute))
                .build()
                .unwrap();
        }
        Config::builder()
            .with_idle_timeout(Some(day * 30))
            .with_absolute_timeout(None)
            .build()
            .unwrap();
        // An absolute timeout under the default idle one: the idle timeout
        // was not asked for, and the absolute one holds.
        Config::builder()
            .with_absolute_timeout(Some(Duration::from_secs(3600)))
            .build()
            .unwrap();
    }

    #[test]
    fn host_prefix_is_accepted_when_valid() {
        Config::builder()
            .with_cookie_name("__Host-s")
            .build()
            .unwrap();
    }
}
