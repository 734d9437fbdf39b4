//! The id on the wire: protecting and verifying cookie values, finding the
//! session cookie among a request's cookies, and rendering `Set-Cookie`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use cookie::{Cookie, CookieJar};

use crate::config::{Config, CookieSecurity};
use crate::id::Id;
use crate::observe;

/// What the response must tell the client about the session id, decided by
/// [`Session::commit`](crate::Session::commit).
///
/// Its `Debug` leaves out the value, which is the client's credential: an
/// outcome logged with `?outcome` shows its length only.
///
/// ```
/// use session_core::SetCookie;
///
/// let outcome = SetCookie::Set { value: "s3cr3t".into(), max_age: None };
/// assert!(!format!("{outcome:?}").contains("s3cr3t"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetCookie {
    /// Nothing to send: the client's cookie (or lack of one) is still right.
    Unchanged,
    /// Send this value: a new or rotated id, or a refreshed `Max-Age`.
    Set {
        /// The protected id, ready for a cookie or a header.
        value: String,
        /// `Max-Age` for a persistent cookie; `None` for a browser-session
        /// cookie.
        max_age: Option<Duration>,
    },
    /// Remove the client's cookie: this request destroyed the session, or found
    /// it ended by another request while using it. A cookie that named no live
    /// session when the request began (expired, say) is left as it is: it is
    /// replaced if the request writes.
    Remove,
}

/// A credential in `Debug` output: its length, never its bytes.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

impl fmt::Debug for SetCookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unchanged => f.write_str("Unchanged"),
            Self::Set { value, max_age } => f
                .debug_struct("Set")
                .field("value", &Redacted(value.len()))
                .field("max_age", max_age)
                .finish(),
            Self::Remove => f.write_str("Remove"),
        }
    }
}

impl SetCookie {
    /// Whether nothing needs to be sent: no `Set-Cookie` (or id header).
    pub fn is_unchanged(&self) -> bool {
        matches!(self, Self::Unchanged)
    }
}

/// Protects an id for the client according to the configured mode.
pub(crate) fn encode_value(config: &Config, id: &Id) -> String {
    let plain = id.to_string();
    match &config.security {
        CookieSecurity::Plain => plain,
        CookieSecurity::Signed(keys) => {
            let mut jar = CookieJar::new();
            jar.signed_mut(keys.current())
                .add(Cookie::new(config.cookie_name.clone(), plain));
            jar.get(&config.cookie_name)
                .map(|c| c.value().to_owned())
                .unwrap_or_default()
        }
        CookieSecurity::Private(keys) => {
            let mut jar = CookieJar::new();
            jar.private_mut(keys.current())
                .add(Cookie::new(config.cookie_name.clone(), plain));
            jar.get(&config.cookie_name)
                .map(|c| c.value().to_owned())
                .unwrap_or_default()
        }
    }
}

/// Verifies a value from the client and parses the id in it. `None` for
/// anything oversized, tampered, signed with an unknown key or malformed.
#[cfg(test)]
pub(crate) fn decode_value(config: &Config, raw: &str) -> Option<Id> {
    verify(config, raw).map(|(id, _)| id)
}

/// [`decode_value`], and whether the value was protected under one of the
/// previous keys (the response then issues it again under the current one).
fn verify(config: &Config, raw: &str) -> Option<(Id, bool)> {
    if !within_limits(config, raw) {
        return None;
    }
    let keys = match &config.security {
        CookieSecurity::Plain => return Id::parse(raw).ok().map(|id| (id, false)),
        CookieSecurity::Signed(keys) | CookieSecurity::Private(keys) => keys,
    };
    let private = matches!(config.security, CookieSecurity::Private(_));
    let jar = CookieJar::new();
    keys.all().iter().enumerate().find_map(|(i, key)| {
        let cookie = Cookie::new(config.cookie_name.clone(), raw.to_owned());
        let opened = if private {
            jar.private(key).decrypt(cookie)
        } else {
            jar.signed(key).verify(cookie)
        };
        opened.and_then(|c| Id::parse(c.value()).ok().map(|id| (id, i > 0)))
    })
}

/// How long a protected id is in each mode: the least `max_cookie_len` can
/// be without refusing the cookies the manager itself issues.
pub(crate) fn protected_len(security: &CookieSecurity) -> usize {
    use crate::id::ID_TEXT_LEN;
    match security {
        CookieSecurity::Plain => ID_TEXT_LEN,
        // Base64 of the HMAC-SHA256 digest, then the id.
        CookieSecurity::Signed(_) => 44 + ID_TEXT_LEN,
        // Padded base64 of the nonce, the encrypted id and the tag.
        CookieSecurity::Private(_) => (12 + ID_TEXT_LEN + 16).div_ceil(3) * 4,
    }
}

/// Whether a value from the client is worth decoding: not empty and not over
/// the configured limit.
fn within_limits(config: &Config, raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= config.max_cookie_len
}

/// How many values with the session's cookie name, of the length the
/// manager issues, a request may present: later ones are ignored, so a
/// header repeating the name thousands of times costs no more than a few.
/// Values of another length are skipped without counting, so junk cookies of
/// the name set for other paths or domains (a sibling subdomain's, which
/// the browser may send first) cannot hide the session's behind them. Values
/// forged at the issued length (no secret) still count: the `__Host-` name
/// prefix, which no other host can set, is the defence against those.
pub(crate) const MAX_CANDIDATES: usize = 8;

/// How many valid ids after the first a request may present for its session
/// to be looked up under, each when the one before names no live session:
/// a browser sends every cookie of the name that matches (one set for the
/// whole domain beside an older host-only one, say), and the first may be a
/// stale one. Each costs a store load, so few are tried.
pub(crate) const MAX_FALLBACKS: usize = 2;

/// The id a request presented, as far as it has been looked at.
///
/// Plain ids are parsed at once: that costs less than keeping their text.
/// Signed and private values are kept as they came and verified on first use
/// ([`Incoming::id`]), so a request that never touches its session pays no
/// cryptography for it.
pub(crate) enum Incoming {
    /// Looked at: the valid id, if any, whether it came under a previous
    /// key, and the next valid ids presented (at most [`MAX_FALLBACKS`],
    /// with the same flag), to try in turn when the one before names no live
    /// session.
    Checked(Option<Id>, bool, Vec<(Id, bool)>),
    /// Signed or encrypted values with the session's cookie name, in request
    /// order, not yet verified; never empty.
    Sealed(Vec<Box<str>>),
}

/// Never shows a value: a sealed one is a bearer credential.
impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Checked(id, old_key, fallbacks) => f
                .debug_tuple("Checked")
                .field(id)
                .field(old_key)
                .field(fallbacks)
                .finish(),
            Self::Sealed(values) => write!(f, "Sealed({} values)", values.len()),
        }
    }
}

impl Incoming {
    /// What a request presented: `values` are the raw values with the
    /// session's cookie name (or of its header), in order. Also tells whether
    /// any was presented at all.
    pub(crate) fn from_values<'a>(
        config: &Config,
        values: impl IntoIterator<Item = &'a str>,
    ) -> (Self, bool) {
        let mut values = values.into_iter().peekable();
        let presented = values.peek().is_some();
        let issued_len = protected_len(&config.security);
        let values = values
            .filter(|v| v.len() == issued_len)
            .take(MAX_CANDIDATES);
        let incoming = match config.security {
            CookieSecurity::Plain => {
                Self::checked(values.filter_map(|v| verify(config, v)), presented)
            }
            CookieSecurity::Signed(_) | CookieSecurity::Private(_) => {
                let sealed: Vec<Box<str>> = values
                    .filter(|v| within_limits(config, v))
                    .map(Box::from)
                    .collect();
                if sealed.is_empty() {
                    Self::checked(std::iter::empty(), presented)
                } else {
                    Self::Sealed(sealed)
                }
            }
        };
        (incoming, presented)
    }

    /// The first of the `valid` ids (and whether it came under a previous
    /// key), with the next few kept for fallback. Counts a rejection
    /// (`session_rejected_cookies_total`) when values were presented and
    /// none is valid: at once for plain ids and values of another length than
    /// the issued one (over the size limit too),
    /// at first use for signed and private ones.
    fn checked(mut valid: impl Iterator<Item = (Id, bool)>, presented: bool) -> Self {
        match valid.next() {
            // Collected without an allocation when there is no other.
            Some((id, old_key)) => {
                Self::Checked(Some(id), old_key, valid.take(MAX_FALLBACKS).collect())
            }
            None => {
                if presented {
                    observe::rejected_cookie();
                }
                Self::Checked(None, false, Vec::new())
            }
        }
    }

    /// The valid id presented, if any: the first value that verifies and
    /// parses (or, after [`Incoming::next_candidate`], the next). Sealed
    /// values are verified here, once.
    pub(crate) fn id(&mut self, config: &Config) -> Option<&Id> {
        if let Self::Sealed(values) = self {
            let valid = values.iter().filter_map(|v| verify(config, v));
            *self = Self::checked(valid, true);
        }
        match self {
            Self::Checked(id, _, _) => id.as_ref(),
            Self::Sealed(_) => None,
        }
    }

    /// Moves on to the next valid id presented, when the current one names
    /// no live session; `false` when there is none.
    pub(crate) fn next_candidate(&mut self) -> bool {
        match self {
            Self::Checked(id, old_key, fallbacks) if !fallbacks.is_empty() => {
                let (next, old) = fallbacks.remove(0);
                *id = Some(next);
                *old_key = old;
                true
            }
            _ => false,
        }
    }

    /// Whether more than one id may be tried (for sealed values not yet
    /// verified: more than one was presented).
    pub(crate) fn has_fallbacks(&self) -> bool {
        match self {
            Self::Checked(_, _, fallbacks) => !fallbacks.is_empty(),
            Self::Sealed(values) => values.len() > 1,
        }
    }

    /// Whether the valid id, once looked at, came under one of the previous
    /// keys: the response should carry it again under the current key, so
    /// that the old key can be retired without ending live sessions.
    pub(crate) fn under_previous_key(&self) -> bool {
        matches!(self, Self::Checked(Some(_), true, _))
    }
}

/// The values of every cookie called `name` in a request's `Cookie` headers,
/// in order. Malformed pairs are skipped.
///
/// ```
/// let headers = ["a=1; session=abc", "session=def"];
/// let found: Vec<&str> = session_core::cookie_values(headers, "session").collect();
/// assert_eq!(found, ["abc", "def"]);
/// ```
pub fn cookie_values<'a, 'n, I>(
    cookie_headers: I,
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n, I>
where
    I: IntoIterator<Item = &'a str>,
{
    cookie_headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.split_once('=')?;
            // RFC 6265's optional whitespace is ASCII (SP, HTAB); trimming
            // Unicode whitespace as well would cost a decode per byte.
            if k.trim_ascii() != name {
                return None;
            }
            let v = v.trim_ascii();
            // RFC 6265 allows the value to be wrapped in double quotes.
            Some(
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v),
            )
        })
}

/// Renders the `Set-Cookie` header value for an outcome, with every configured
/// attribute. `None` for [`SetCookie::Unchanged`].
pub(crate) fn set_cookie_header(config: &Config, outcome: &SetCookie) -> Option<String> {
    match outcome {
        SetCookie::Unchanged => None,
        SetCookie::Set { value, max_age } => {
            // The hot path of every new session: the fixed attributes are
            // rendered once by the cookie crate, then reused.
            let attributes = config.cookie_attributes.get_or_init(|| {
                let rendered = with_attributes(config, Cookie::new("", "")).to_string();
                rendered.strip_prefix('=').unwrap_or(&rendered).to_owned()
            });
            let mut header = String::with_capacity(
                config.cookie_name.len() + value.len() + attributes.len() + 24,
            );
            header.push_str(&config.cookie_name);
            header.push('=');
            header.push_str(value);
            header.push_str(attributes);
            if let Some(age) = max_age {
                let secs = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
                header.push_str("; Max-Age=");
                header.push_str(&secs.to_string());
            }
            Some(header)
        }
        SetCookie::Remove => {
            let mut c = Cookie::new(config.cookie_name.as_str(), "");
            c.set_max_age(time::Duration::ZERO);
            c.set_expires(time::OffsetDateTime::UNIX_EPOCH);
            Some(with_attributes(config, c).to_string())
        }
    }
}

/// `cookie` with the configured path, domain and flags.
fn with_attributes<'c>(config: &'c Config, mut cookie: Cookie<'c>) -> Cookie<'c> {
    cookie.set_path(config.path.as_str());
    if let Some(d) = &config.domain {
        cookie.set_domain(d.as_str());
    }
    cookie.set_secure(config.secure);
    cookie.set_http_only(config.http_only);
    cookie.set_same_site(config.same_site);
    if config.partitioned {
        cookie.set_partitioned(true);
    }
    cookie
}

/// The text of the raw values of header `name`, for an adapter to hand to
/// [`Manager::session_from_request`](crate::Manager::session_from_request)
/// or [`join_header_values`]: each value whole when it is UTF-8. A `Cookie`
/// value that is not is read cookie by cookie (its `;`-separated parts that
/// are UTF-8): it carries every cookie of the site in one value, so one
/// cookie of another app in another encoding must not hide the session
/// cookie beside it. A value of any other header that is not UTF-8 yields
/// nothing.
///
/// ```
/// use session_core::header_text;
///
/// let raw: [&[u8]; 2] = [b"pref=\xfc; session=abc", "lang=\u{fc}".as_bytes()];
/// let cookies: Vec<&str> = header_text("cookie", raw).collect();
/// assert_eq!(cookies, [" session=abc", "lang=\u{fc}"]);
/// let other: [&[u8]; 1] = [b"x=\xe9;no-store"];
/// assert_eq!(header_text("cache-control", other).count(), 0);
/// ```
pub fn header_text<'a, I>(name: &str, values: I) -> impl Iterator<Item = &'a str> + use<'a, I>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let cookie = name.eq_ignore_ascii_case("cookie");
    values.into_iter().flat_map(move |raw| {
        let whole = std::str::from_utf8(raw).ok();
        // Split only where the whole is not UTF-8: a valid value (every
        // request's) costs one check.
        let parts = (whole.is_none() && cookie).then(|| {
            raw.split(|b| *b == b';')
                .filter_map(|part| std::str::from_utf8(part).ok())
        });
        whole.into_iter().chain(parts.into_iter().flatten())
    })
}

/// The values of a header that occurs several times, joined as one
/// comma-separated list (RFC 9110), or `None` if there is none: what
/// adapters hand to [`Manager::response_headers`](crate::Manager::response_headers)
/// as a response's current value.
///
/// ```
/// use session_core::join_header_values;
///
/// assert_eq!(join_header_values(["a", "b"]).as_deref(), Some("a, b"));
/// assert_eq!(join_header_values(["no-store"]).as_deref(), Some("no-store"));
/// assert_eq!(join_header_values(std::iter::empty()), None);
/// ```
pub fn join_header_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut values = values.into_iter();
    let mut joined = values.next()?.to_owned();
    for v in values {
        joined.push_str(", ");
        joined.push_str(v);
    }
    Some(joined)
}

/// A header a framework adapter must write on the response, as decided by
/// [`Manager::response_headers`](crate::Manager::response_headers). Its
/// `Debug` shows the values of `Cache-Control` and `Vary` only: the others
/// carry the session id.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderUpdate {
    /// The header's name, lowercase: `set-cookie`, `cache-control`, `vary`
    /// or the configured id header.
    pub name: Cow<'static, str>,
    /// The header's value.
    pub value: Cow<'static, str>,
    /// Add beside the header's existing values (`Set-Cookie`) instead of
    /// replacing them.
    pub append: bool,
}

impl fmt::Debug for HeaderUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HeaderUpdate");
        d.field("name", &self.name);
        if matches!(&*self.name, "cache-control" | "vary") {
            d.field("value", &self.value);
        } else {
            d.field("value", &Redacted(self.value.len()));
        }
        d.field("append", &self.append).finish()
    }
}

/// The elements of a comma-separated header value, trimmed. A comma inside
/// a quoted string (`ext="a, b"`, RFC 9110 section 5.6.4) separates nothing,
/// so a quoted `no-store` is not taken for the directive; an unclosed quote
/// runs to the end.
fn list_items(list: &str) -> impl Iterator<Item = &str> {
    let (mut quoted, mut escaped) = (false, false);
    list.split(move |c: char| {
        if escaped {
            escaped = false;
            return false;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                false
            }
            '"' => {
                quoted = !quoted;
                false
            }
            ',' => !quoted,
            _ => false,
        }
    })
    .map(str::trim)
}

/// Whether a comma-separated header value lists `token`, in any case.
fn has_token(list: &str, token: &str) -> bool {
    list_items(list).any(|t| t.eq_ignore_ascii_case(token))
}

/// Whether a `Vary` value already covers `token`: `*` covers every one.
fn varies_on(list: &str, token: &str) -> bool {
    list_items(list).any(|t| t == "*") || has_token(list, token)
}

/// The headers a response needs for a commit outcome: the id itself
/// (`Set-Cookie`, or the configured header), `Cache-Control: no-store`
/// unless the handler already said `no-store`, and `Vary` on what carries the
/// id, so no cache hands one user's session to another.
pub(crate) fn response_headers(
    config: &Config,
    outcome: &SetCookie,
    existing: &dyn Fn(&str) -> Option<String>,
) -> Vec<HeaderUpdate> {
    let (name, value, append): (Cow<'static, str>, String, bool) = match (&config.header, outcome) {
        (_, SetCookie::Unchanged) => return Vec::new(),
        (Some(h), SetCookie::Set { value, .. }) => (h.clone().into(), value.clone(), false),
        (Some(h), SetCookie::Remove) => (h.clone().into(), String::new(), false),
        (None, outcome) => match set_cookie_header(config, outcome) {
            Some(v) => ("set-cookie".into(), v, true),
            None => return Vec::new(),
        },
    };
    let vary_on: Cow<'static, str> = if append {
        "cookie".into()
    } else {
        name.clone()
    };
    let mut updates = Vec::with_capacity(3);
    updates.push(HeaderUpdate {
        name,
        value: value.into(),
        append,
    });
    let cache = existing("cache-control");
    if !cache.as_deref().is_some_and(|c| has_token(c, "no-store")) {
        updates.push(HeaderUpdate {
            name: "cache-control".into(),
            value: "no-store".into(),
            append: false,
        });
    }
    let vary = existing("vary");
    match vary.as_deref() {
        Some(v) if varies_on(v, &vary_on) => {}
        Some(v) if !v.trim().is_empty() => updates.push(HeaderUpdate {
            name: "vary".into(),
            value: format!("{v}, {vary_on}").into(),
            append: false,
        }),
        _ => updates.push(HeaderUpdate {
            name: "vary".into(),
            value: vary_on,
            append: false,
        }),
    }
    updates
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CookieKeys, Key};

    fn config(security: CookieSecurity) -> Config {
        Config::builder().with_security(security).build().unwrap()
    }

    /// The shortest limit each mode accepts is the length of what it issues,
    /// and a session survives it.
    #[test]
    fn each_modes_values_fit_the_least_limit_it_accepts() {
        let keys = CookieKeys::new(Key::generate());
        for security in [
            CookieSecurity::Plain,
            CookieSecurity::Signed(keys.clone()),
            CookieSecurity::Private(keys.clone()),
        ] {
            let least = protected_len(&security).max(64);
            let c = Config::builder()
                .with_security(security.clone())
                .with_max_cookie_len(least)
                .build()
                .unwrap();
            let id = Id::generate().unwrap();
            let value = encode_value(&c, &id);
            assert_eq!(value.len(), protected_len(&security), "{security:?}");
            assert_eq!(decode_value(&c, &value), Some(id), "{security:?}");
            if least > 64 {
                let err = Config::builder()
                    .with_security(security.clone())
                    .with_max_cookie_len(least - 1)
                    .build()
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("max cookie length"), "{err}");
            }
        }
    }

    #[test]
    fn every_mode_round_trips() {
        let keys = CookieKeys::new(Key::generate());
        for security in [
            CookieSecurity::Plain,
            CookieSecurity::Signed(keys.clone()),
            CookieSecurity::Private(keys),
        ] {
            let c = config(security);
            let id = Id::generate().unwrap();
            let v = encode_value(&c, &id);
            assert_eq!(decode_value(&c, &v), Some(id), "{:?}", c.security());
        }
    }

    #[test]
    fn tampering_any_byte_is_rejected() {
        let keys = CookieKeys::new(Key::generate());
        for security in [
            CookieSecurity::Plain,
            CookieSecurity::Signed(keys.clone()),
            CookieSecurity::Private(keys),
        ] {
            let c = config(security);
            let id = Id::generate().unwrap();
            let v = encode_value(&c, &id);
            for i in 0..v.len() {
                let mut bytes = v.clone().into_bytes();
                bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
                let tampered = String::from_utf8(bytes).unwrap();
                assert_ne!(decode_value(&c, &tampered), Some(id.clone()));
            }
            // Truncation.
            assert_eq!(decode_value(&c, &v[..v.len() - 1]), None);
        }
    }

    #[test]
    fn key_rotation_verifies_with_old_keys_and_signs_with_the_newest() {
        let old = Key::generate();
        let new = Key::generate();
        for private in [false, true] {
            let mk = |keys: CookieKeys| {
                config(if private {
                    CookieSecurity::Private(keys)
                } else {
                    CookieSecurity::Signed(keys)
                })
            };
            let before = mk(CookieKeys::new(old.clone()));
            let during = mk(CookieKeys::new(new.clone()).with_previous(old.clone()));
            let after = mk(CookieKeys::new(new.clone()));
            let id = Id::generate().unwrap();
            let issued_before = encode_value(&before, &id);
            assert_eq!(decode_value(&during, &issued_before), Some(id.clone()));
            assert_eq!(decode_value(&after, &issued_before), None);
            let issued_during = encode_value(&during, &id);
            assert_eq!(decode_value(&after, &issued_during), Some(id));
        }
    }

    #[test]
    fn private_values_are_bound_to_the_cookie_name() {
        let keys = CookieKeys::new(Key::generate());
        let a = Config::builder()
            .with_cookie_name("a")
            .with_security(CookieSecurity::Private(keys.clone()))
            .build()
            .unwrap();
        let b = Config::builder()
            .with_cookie_name("b")
            .with_security(CookieSecurity::Private(keys))
            .build()
            .unwrap();
        let v = encode_value(&a, &Id::generate().unwrap());
        assert_eq!(decode_value(&b, &v), None);
    }

    #[test]
    fn oversized_and_garbage_values_are_rejected() {
        let c = config(CookieSecurity::Plain);
        assert_eq!(decode_value(&c, &"A".repeat(8192)), None);
        assert_eq!(decode_value(&c, ""), None);
        assert_eq!(decode_value(&c, "\u{0}\u{ffff}"), None);
        let keys = CookieKeys::new(Key::generate());
        let s = config(CookieSecurity::Signed(keys.clone()));
        // Multi-byte text with and without a character boundary where the
        // signature ends (byte 44).
        let odd = format!("A{}", "é".repeat(40));
        for value in ["é".repeat(40), odd] {
            assert_eq!(decode_value(&s, &value), None);
        }
        let p = config(CookieSecurity::Private(keys));
        assert_eq!(decode_value(&p, "é".repeat(40).as_str()), None);
    }

    #[test]
    fn sealed_values_are_kept_until_first_use_then_the_first_valid_one_wins() {
        let keys = CookieKeys::new(Key::generate());
        for security in [
            CookieSecurity::Signed(keys.clone()),
            CookieSecurity::Private(keys.clone()),
        ] {
            let c = config(security);
            let id = Id::generate().unwrap();
            let good = encode_value(&c, &id);
            let later = encode_value(&c, &Id::generate().unwrap());
            let forged = encode_value(&config(CookieSecurity::Plain), &id);
            let oversized = "A".repeat(c.max_cookie_len + 1);
            let values = [
                oversized.as_str(),
                "",
                forged.as_str(),
                good.as_str(),
                later.as_str(),
            ];
            let (mut incoming, presented) = Incoming::from_values(&c, values);
            assert!(presented);
            // Values of another length than this mode issues (oversized,
            // empty, a plain id) are dropped at once; the rest wait.
            let Incoming::Sealed(kept) = &incoming else {
                panic!("verified before use: {incoming:?}");
            };
            assert_eq!(kept.len(), 2);
            // Debug output never shows a sealed value.
            assert_eq!(format!("{incoming:?}"), "Sealed(2 values)");
            assert_eq!(incoming.id(&c), Some(&id), "the first valid value wins");
            assert!(matches!(&incoming, Incoming::Checked(Some(_), _, more) if more.len() == 1));
            // The later valid one is the fallback, then there is none.
            assert!(incoming.next_candidate());
            assert_ne!(incoming.id(&c), Some(&id));
            assert!(!incoming.next_candidate());

            let (mut incoming, _) = Incoming::from_values(&c, [forged.as_str()]);
            assert_eq!(incoming.id(&c), None);
            assert!(matches!(incoming, Incoming::Checked(None, _, _)));

            let (incoming, presented) = Incoming::from_values(&c, [oversized.as_str()]);
            assert!(presented);
            assert!(matches!(incoming, Incoming::Checked(None, _, _)));
        }
    }

    #[test]
    fn only_the_first_few_values_are_tried() {
        let keys = CookieKeys::new(Key::generate());
        let other_keys = CookieKeys::new(Key::generate());
        for (security, other) in [
            (CookieSecurity::Plain, CookieSecurity::Plain),
            (
                CookieSecurity::Signed(keys),
                CookieSecurity::Signed(other_keys),
            ),
        ] {
            let c = config(security);
            let id = Id::generate().unwrap();
            let good = encode_value(&c, &id);
            // Of the issued length, but not a valid id (under this key).
            let forged = match other {
                CookieSecurity::Plain => "!".repeat(good.len()),
                other => encode_value(&config(other), &Id::generate().unwrap()),
            };
            assert_eq!(forged.len(), good.len());
            let mut values = vec![forged.as_str(); MAX_CANDIDATES - 1];
            values.push(&good);
            let (mut incoming, _) = Incoming::from_values(&c, values.iter().copied());
            assert_eq!(incoming.id(&c), Some(&id), "{:?}", c.security());
            values.insert(0, &forged);
            let (mut incoming, presented) = Incoming::from_values(&c, values.iter().copied());
            assert!(presented);
            assert_eq!(incoming.id(&c), None, "{:?}", c.security());
            // Values of another length do not count: however many come
            // first (cookies of the name set for other paths or domains),
            // the session's is found.
            let mut values = vec!["junk"; 100];
            values.push(&good);
            let (mut incoming, presented) = Incoming::from_values(&c, values.iter().copied());
            assert!(presented);
            assert_eq!(incoming.id(&c), Some(&id), "{:?}", c.security());
            let (mut incoming, presented) = Incoming::from_values(&c, ["junk"]);
            assert!(presented, "a value of the name was presented");
            assert_eq!(incoming.id(&c), None);
        }
    }

    #[test]
    fn plain_ids_are_parsed_at_once() {
        let c = config(CookieSecurity::Plain);
        let id = Id::generate().unwrap();
        let good = encode_value(&c, &id);
        let later = encode_value(&c, &Id::generate().unwrap());
        let (mut incoming, presented) =
            Incoming::from_values(&c, ["junk", good.as_str(), later.as_str()]);
        assert!(presented);
        assert!(matches!(&incoming, Incoming::Checked(Some(found), _, _) if *found == id));
        assert_eq!(incoming.id(&c), Some(&id));
        let (incoming, presented) = Incoming::from_values(&c, None::<&str>);
        assert!(!presented);
        assert!(matches!(incoming, Incoming::Checked(None, _, _)));
    }

    /// Valid ids after the first are kept for fallback, at most
    /// [`MAX_FALLBACKS`] of them, in request order; one cookie keeps none.
    #[test]
    fn later_valid_ids_are_kept_for_fallback() {
        let c = config(CookieSecurity::Plain);
        let ids: Vec<Id> = (0..5).map(|_| Id::generate().unwrap()).collect();
        let texts: Vec<String> = ids.iter().map(|id| encode_value(&c, id)).collect();
        let mut values = vec!["junk"];
        values.extend(texts.iter().map(String::as_str));
        let (mut incoming, _) = Incoming::from_values(&c, values);
        assert!(incoming.has_fallbacks());
        let mut seen = vec![incoming.id(&c).cloned().unwrap()];
        while incoming.next_candidate() {
            seen.push(incoming.id(&c).cloned().unwrap());
        }
        assert_eq!(seen, ids[..=MAX_FALLBACKS].to_vec());
        let (incoming, _) = Incoming::from_values(&c, [texts[0].as_str()]);
        assert!(!incoming.has_fallbacks());
        assert!(matches!(&incoming, Incoming::Checked(Some(_), _, more) if more.capacity() == 0));
    }

    #[test]
    fn cookie_pairs_are_found_around_ascii_whitespace_and_quotes() {
        let headers = [
            "a=1;session=one",
            " session = two ;\tb=2",
            "session=\"three\"",
            "\tsession\t=\tfour\t",
            "session=five\u{a0}",
            "sessionx=no; xsession=no; session",
        ];
        let found: Vec<&str> = cookie_values(headers, "session").collect();
        assert_eq!(found, ["one", "two", "three", "four", "five\u{a0}"]);
    }

    #[test]
    fn set_cookie_is_what_the_cookie_crate_renders() {
        let configs = [
            Config::builder().build().unwrap(),
            Config::builder()
                .with_domain(Some("example.com"))
                .with_partitioned(true)
                .with_path("/app")
                .build()
                .unwrap(),
            Config::builder()
                .with_secure(false)
                .with_same_site(crate::SameSite::Strict)
                .build()
                .unwrap(),
            Config::builder()
                .with_same_site(crate::SameSite::None)
                .with_cookie_name("__Host-sid")
                .build()
                .unwrap(),
        ];
        for c in &configs {
            for max_age in [None, Some(Duration::from_secs(3600)), Some(Duration::MAX)] {
                let mut expected = Cookie::new(c.cookie_name.as_str(), "abc");
                if let Some(age) = max_age {
                    expected
                        .set_max_age(time::Duration::try_from(age).unwrap_or(time::Duration::MAX));
                }
                let expected = with_attributes(c, expected).to_string();
                let fast = set_cookie_header(
                    c,
                    &SetCookie::Set {
                        value: "abc".into(),
                        max_age,
                    },
                )
                .unwrap();
                assert_eq!(fast, expected);
            }
        }
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let c = Config::builder()
            .with_domain(Some("example.com"))
            .with_partitioned(true)
            .build()
            .unwrap();
        let set = set_cookie_header(
            &c,
            &SetCookie::Set {
                value: "v".into(),
                max_age: Some(Duration::from_secs(60)),
            },
        )
        .unwrap();
        for part in [
            "session=v",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
            "Domain=example.com",
            "Max-Age=60",
            "Partitioned",
        ] {
            assert!(set.contains(part), "{set} lacks {part}");
        }
        let remove = set_cookie_header(&c, &SetCookie::Remove).unwrap();
        for part in [
            "session=",
            "Max-Age=0",
            "Domain=example.com",
            "Path=/",
            "Secure",
            "SameSite=Lax",
        ] {
            assert!(remove.contains(part), "{remove} lacks {part}");
        }
        assert_eq!(set_cookie_header(&c, &SetCookie::Unchanged), None);
    }

    fn headers(
        c: &Config,
        outcome: &SetCookie,
        existing: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let existing: Vec<(String, String)> = existing
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        response_headers(c, outcome, &|name| {
            existing
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .into_iter()
        .map(|u| (u.name.into_owned(), u.value.into_owned()))
        .collect()
    }

    #[test]
    fn responses_that_set_the_id_are_not_cacheable() {
        let c = config(CookieSecurity::Plain);
        let set = SetCookie::Set {
            value: "v".into(),
            max_age: None,
        };
        assert!(headers(&c, &SetCookie::Unchanged, &[]).is_empty());
        let h = headers(&c, &set, &[]);
        assert_eq!(h[0].0, "set-cookie");
        assert!(h.contains(&("cache-control".into(), "no-store".into())));
        assert!(h.contains(&("vary".into(), "cookie".into())));
        // A handler's no-store stays; a weaker Cache-Control is replaced.
        let h = headers(&c, &set, &[("cache-control", "private, no-store")]);
        assert!(!h.iter().any(|(k, _)| k == "cache-control"));
        let h = headers(&c, &set, &[("cache-control", "public, max-age=60")]);
        assert!(h.contains(&("cache-control".into(), "no-store".into())));
        // Vary is merged, never duplicated.
        let h = headers(&c, &set, &[("vary", "Accept-Encoding")]);
        assert!(h.contains(&("vary".into(), "Accept-Encoding, cookie".into())));
        let h = headers(&c, &set, &[("vary", "Cookie")]);
        assert!(!h.iter().any(|(k, _)| k == "vary"));
        // `Vary: *` covers the cookie already; `Cache-Control: *` (not a
        // directive at all) says nothing about storing.
        let h = headers(&c, &set, &[("vary", "*")]);
        assert!(!h.iter().any(|(k, _)| k == "vary"));
        let h = headers(&c, &set, &[("cache-control", "*")]);
        assert!(h.contains(&("cache-control".into(), "no-store".into())));
        // A `no-store` inside a quoted extension value is no directive: a
        // shared cache would still store the response and its id.
        for quoted in [
            r#"public, max-age=3600, ext="a, no-store, b""#,
            r#"public, ext="a\", no-store""#,
            r#"public, ext="a, no-store"#,
        ] {
            let h = headers(&c, &set, &[("cache-control", quoted)]);
            assert!(
                h.contains(&("cache-control".into(), "no-store".into())),
                "{quoted}"
            );
        }
        let h = headers(&c, &set, &[("cache-control", r#"ext="a, b", No-Store"#)]);
        assert!(!h.iter().any(|(k, _)| k == "cache-control"));
    }

    /// What carries the id never shows in `Debug` output (logs); the cache
    /// headers do.
    #[test]
    fn debug_output_leaves_the_id_out() {
        let c = config(CookieSecurity::Plain);
        let set = SetCookie::Set {
            value: "s3cr3t-id".into(),
            max_age: Some(Duration::from_secs(60)),
        };
        let shown = format!("{set:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("9 bytes") && shown.contains("60s"),
            "{shown}"
        );
        let updates = response_headers(&c, &set, &|_| None);
        let shown = format!("{updates:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("no-store"), "{shown}");
        let h = Config::builder()
            .with_header(Some("X-Session"))
            .build()
            .unwrap();
        let shown = format!("{:?}", response_headers(&h, &set, &|_| None));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(format!("{:?}", SetCookie::Remove), "Remove");
    }

    #[test]
    fn header_transport_uses_its_header() {
        let c = Config::builder()
            .with_header(Some("X-Session"))
            .build()
            .unwrap();
        let set = SetCookie::Set {
            value: "v".into(),
            max_age: None,
        };
        let h = headers(&c, &set, &[]);
        assert_eq!(h[0], ("x-session".into(), "v".into()));
        assert!(h.contains(&("vary".into(), "x-session".into())));
        let h = headers(&c, &SetCookie::Remove, &[]);
        assert_eq!(h[0], ("x-session".into(), String::new()));
    }

    #[test]
    fn browser_session_cookie_has_no_max_age() {
        let c = config(CookieSecurity::Plain);
        let set = set_cookie_header(
            &c,
            &SetCookie::Set {
                value: "v".into(),
                max_age: None,
            },
        )
        .unwrap();
        assert!(!set.contains("Max-Age"));
        assert!(!set.contains("Expires"));
    }
}
