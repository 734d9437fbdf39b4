//! session-rocket against the shared HTTP suite, plus what only Rocket has.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use session_core::Manager;

/// The next port to try. Rocket 0.5 binds by itself, so the address is only
/// reserved until it does; handing each test of this process its own port
/// keeps two tests from being given the same freed port by the OS.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A loopback address no other test of this process is given, free now.
fn reserve() -> SocketAddr {
    let _ = NEXT_PORT.compare_exchange(
        0,
        20_000 + (std::process::id() % 20_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        if let Ok(addr) =
            std::net::TcpListener::bind(("127.0.0.1", port)).and_then(|l| l.local_addr())
        {
            return addr;
        }
    }
}

/// Serves the Iris demo on a free loopback port, once it answers.
async fn spawn(manager: Manager) -> SocketAddr {
    let addr = reserve();
    let server = tokio::spawn(session_demo::rocket::serve_at(addr, manager));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(!server.is_finished(), "Rocket stopped before serving");
        assert!(Instant::now() < deadline, "Rocket did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    addr
}

mod suite {
    use super::spawn;
    session_http_suite::http_suite!(spawn);
}

/// Rocket drops a header value that is not UTF-8 before any fairing sees
/// it, its cookie jar too: a cookie of another app in another encoding (a
/// Latin-1 `ü`) in the `Cookie` header hides the session's, which axum and
/// actix-web find (their `a_cookie_in_another_encoding_does_not_hide_the_session`).
/// This pins the difference that session-rocket's docs describe; should a
/// Rocket release keep such headers, this fails and the docs can change.
#[tokio::test]
async fn a_cookie_in_another_encoding_hides_the_session_on_rocket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `GET /incr` with `cookie` as the raw `Cookie` header, if any: the
    /// response's `name=value` session cookie, if it sets one, and its body.
    async fn incr(addr: SocketAddr, cookie: Option<&[u8]>) -> (Option<String>, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request =
            b"GET /incr HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_vec();
        if let Some(cookie) = cookie {
            request.extend_from_slice(b"Cookie: ");
            request.extend_from_slice(cookie);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let cookie = head.lines().find_map(|line| {
            let value = line.strip_prefix("set-cookie: ")?;
            Some(value.split(';').next()?.to_owned())
        });
        (cookie, body.to_owned())
    }

    let manager = Manager::new(
        session_memory::MemoryStore::new(),
        session_core::Config::default(),
    );
    let addr = spawn(manager).await;
    let (pair, body) = incr(addr, None).await;
    assert_eq!(body, "1");
    let pair = pair.expect("a new session's cookie");
    let (_, body) = incr(addr, Some(pair.as_bytes())).await;
    assert_eq!(body, "2", "the session, under a UTF-8 header");
    let latin1 = [b"pref=\xfc; ".as_slice(), pair.as_bytes()].concat();
    let (new, body) = incr(addr, Some(&latin1)).await;
    assert_eq!(body, "1", "Rocket dropped the header: a new session");
    assert!(new.is_some_and(|new| new != pair));
}

mod rocket_only {
    use rocket::http::Status;
    use rocket::local::asynchronous::Client;
    use rocket::{get, routes};
    use session_core::{Config, Manager};
    use session_memory::MemoryStore;
    use session_rocket::{Session, SessionError, SessionFairing};

    #[get("/")]
    async fn needs_session(_s: Session) -> &'static str {
        "unreachable"
    }

    #[get("/fail")]
    async fn fail(s: Session) -> (Status, &'static str) {
        s.insert_flash("error", "it broke").await.unwrap();
        (Status::BadRequest, "bad")
    }

    #[get("/count")]
    async fn count(s: Session) -> Result<String, SessionError> {
        Ok(s.increment("n", 1).await?.to_string())
    }

    #[get("/login")]
    async fn login(s: Session) -> &'static str {
        s.login("alice").await.unwrap();
        "in"
    }

    #[get("/me")]
    fn me(user: session_rocket::SignedIn) -> String {
        user.0
    }

    /// `SignedIn` fails with 401 before the handler for a visitor, gives a
    /// signed-in request its owner, and fails with the session's 503 when
    /// the store is down.
    #[tokio::test]
    async fn signed_in_guards_a_route_and_names_the_owner() {
        let store = session_core::testing::Instrumented::new(MemoryStore::new());
        let manager = Manager::new(store.clone(), Config::default());
        let rocket = rocket::build()
            .attach(SessionFairing::new(manager))
            .mount("/", routes![login, me]);
        let client = Client::tracked(rocket).await.expect("client");
        assert_eq!(
            client.get("/me").dispatch().await.status(),
            Status::Unauthorized
        );
        assert_eq!(client.get("/login").dispatch().await.status(), Status::Ok);
        let res = client.get("/me").dispatch().await;
        assert_eq!(res.status(), Status::Ok);
        assert_eq!(res.into_string().await.as_deref(), Some("alice"));
        store.fail_with(Some(session_core::StoreErrorKind::Unavailable));
        assert_eq!(
            client.get("/me").dispatch().await.status(),
            Status::ServiceUnavailable
        );
    }

    #[get("/panic")]
    async fn panics(s: Session) -> &'static str {
        s.insert("name", "mallory").await.unwrap();
        panic!("the handler fails midway");
    }

    /// Rocket catches a handler's panic and answers 500 before the fairing
    /// commits: what the handler deferred is not saved, as on axum and
    /// actix-web, where the panic unwinds through the commit. (Unlike them,
    /// Rocket still answers: its 500 carries what the store already holds,
    /// such as the new id of a login made before the panic.)
    #[tokio::test]
    async fn a_handler_that_panics_saves_nothing_it_deferred() {
        let store = MemoryStore::new();
        let manager = Manager::new(store.clone(), Config::default());
        let rocket = rocket::build()
            .attach(SessionFairing::new(manager))
            .mount("/", routes![panics]);
        let client = Client::untracked(rocket).await.expect("client");
        let res = client.get("/panic").dispatch().await;
        assert_eq!(res.status(), Status::InternalServerError);
        assert!(res.headers().get_one("set-cookie").is_none());
        assert!(
            store.is_empty(),
            "the panicking handler's session was stored"
        );
    }

    #[tokio::test]
    async fn a_missing_fairing_stops_the_launch() {
        let rocket = rocket::build().mount("/", routes![needs_session]);
        let err = rocket
            .ignite()
            .await
            .expect_err("the Session sentinel aborts the launch");
        let text = format!("{err:?}");
        assert!(
            text.contains("SentinelAborts") && text.contains("session_rocket::Session"),
            "{text}"
        );
    }

    /// Rocket's local client keeps the cookies it was sent and sends them
    /// back in the request's cookie jar, without a `Cookie` header: the
    /// session follows them, as it does a browser's.
    #[tokio::test]
    async fn the_local_clients_cookies_carry_the_session() {
        let store = MemoryStore::new();
        let manager = Manager::new(store.clone(), Config::default());
        let rocket = rocket::build()
            .attach(SessionFairing::new(manager.clone()))
            .mount("/", routes![count]);
        let client = Client::tracked(rocket).await.expect("client");
        for n in ["1", "2", "3"] {
            let res = client.get("/count").dispatch().await;
            assert_eq!(res.into_string().await.as_deref(), Some(n));
        }
        // A `Cookie` header of the test's own beside the tracked cookies.
        let res = (client.get("/count"))
            .header(rocket::http::Header::new("Cookie", "theme=dark"))
            .dispatch()
            .await;
        assert_eq!(res.into_string().await.as_deref(), Some("4"));
        assert_eq!(store.len(), 1);
        // A cookie given to one request, the way a test starts from a
        // session it made with the manager.
        let made = manager.session_from_cookies(None::<&str>);
        made.insert("n", 41u64).await.unwrap();
        let session_core::SetCookie::Set { value, .. } = made.commit().await.unwrap() else {
            panic!("a new session sets its cookie");
        };
        let untracked = Client::untracked(
            rocket::build()
                .attach(SessionFairing::new(manager))
                .mount("/", routes![count]),
        )
        .await
        .expect("client");
        let res = untracked
            .get("/count")
            .cookie(("session", value))
            .dispatch()
            .await;
        assert!(res.headers().get_one("set-cookie").is_none());
        assert_eq!(res.into_string().await.as_deref(), Some("42"));
    }

    /// `SessionError` answers the error's status with its reason as plain
    /// text, as on axum and actix-web.
    #[tokio::test]
    async fn a_session_error_is_its_status_in_plain_text() {
        use session_core::testing::Instrumented;
        use session_core::StoreErrorKind;

        let store = Instrumented::new(MemoryStore::new());
        let manager = Manager::new(store.clone(), Config::default());
        let rocket = rocket::build()
            .attach(SessionFairing::new(manager))
            .mount("/", routes![count]);
        let client = Client::untracked(rocket).await.expect("client");
        assert_eq!(client.get("/count").dispatch().await.status(), Status::Ok);
        store.fail_with(Some(StoreErrorKind::Unavailable));
        let res = client.get("/count").dispatch().await;
        assert_eq!(res.status(), Status::ServiceUnavailable);
        assert_eq!(res.content_type(), Some(rocket::http::ContentType::Plain));
        assert_eq!(
            res.into_string().await.as_deref(),
            Some("Service Unavailable")
        );
    }

    /// Attached twice (a shared base Rocket that a test attaches to again),
    /// the fairing launches, and one commit answers.
    #[tokio::test]
    async fn a_fairing_attached_twice_launches_and_commits_once() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let rocket = rocket::build()
            .attach(SessionFairing::new(manager.clone()))
            .attach(SessionFairing::new(manager))
            .mount("/", routes![fail]);
        let client = Client::untracked(rocket).await.expect("it launches");
        let res = client.get("/fail").dispatch().await;
        assert_eq!(res.status(), Status::BadRequest);
        assert_eq!(res.headers().get("set-cookie").count(), 1);
    }

    /// A commit that fails answers a bare error in place of the handler's
    /// response. Rocket runs response fairings in the order they were
    /// attached: the headers of one attached after the session fairing are
    /// kept, those of one attached before it go with the handler's response
    /// (as those of middleware inside the session layer do on axum and
    /// actix-web).
    #[tokio::test]
    async fn a_failed_commit_keeps_the_headers_of_fairings_attached_after_it() {
        use rocket::fairing::AdHoc;
        let store = session_core::testing::Instrumented::new(MemoryStore::new());
        let manager = Manager::new(store.clone(), Config::default());
        let header = |name: &'static str| {
            AdHoc::on_response(name, move |_, res| {
                Box::pin(async move {
                    res.set_raw_header(name, "1");
                })
            })
        };
        let rocket = rocket::build()
            .attach(header("x-before"))
            .attach(SessionFairing::new(manager))
            .attach(header("x-after"))
            .mount("/", routes![fail]);
        let client = Client::untracked(rocket).await.expect("client");
        store.fail_with(Some(session_core::StoreErrorKind::Unavailable));
        let res = client.get("/fail").dispatch().await;
        assert_eq!(res.status(), Status::ServiceUnavailable);
        assert_eq!(res.headers().get_one("x-after"), Some("1"));
        assert_eq!(res.headers().get_one("x-before"), None);
    }

    /// Rocket attaches its `Shield` (security headers) first, by itself, so
    /// a failed commit's error goes without them; attached again after the
    /// session fairing (it is a singleton: it moves), it covers that error
    /// too.
    #[tokio::test]
    async fn shield_attached_after_the_session_fairing_covers_a_failed_commit() {
        use rocket::shield::Shield;
        let nosniff = |res: &rocket::local::asynchronous::LocalResponse<'_>| {
            res.headers()
                .get_one("x-content-type-options")
                .map(str::to_owned)
        };
        for again in [false, true] {
            let store = session_core::testing::Instrumented::new(MemoryStore::new());
            let manager = Manager::new(store.clone(), Config::default());
            let mut rocket = rocket::build()
                .attach(SessionFairing::new(manager))
                .mount("/", routes![fail]);
            if again {
                rocket = rocket.attach(Shield::default());
            }
            let client = Client::untracked(rocket).await.expect("client");
            let res = client.get("/fail").dispatch().await;
            assert_eq!(nosniff(&res).as_deref(), Some("nosniff"));
            store.fail_with(Some(session_core::StoreErrorKind::Unavailable));
            let res = client.get("/fail").dispatch().await;
            assert_eq!(res.status(), Status::ServiceUnavailable);
            assert_eq!(nosniff(&res).is_some(), again);
        }
    }

    /// A fairing attached before the session fairing that asks for the
    /// session guard (finding none yet) does not take the session away from
    /// the handler.
    #[tokio::test]
    async fn an_earlier_fairing_asking_for_the_session_leaves_it_to_the_handler() {
        use rocket::fairing::AdHoc;
        let store = MemoryStore::new();
        let manager = Manager::new(store.clone(), Config::default());
        let early = AdHoc::on_request("asks early", |req, _| {
            Box::pin(async move {
                let asked = req.guard::<Session>().await;
                assert!(asked.is_error(), "a session before the session fairing ran");
            })
        });
        let rocket = rocket::build()
            .attach(early)
            .attach(SessionFairing::new(manager))
            .mount("/", routes![count]);
        let client = Client::untracked(rocket).await.expect("client");
        let res = client.get("/count").dispatch().await;
        assert_eq!(res.status(), Status::Ok);
        assert!(res.headers().get_one("set-cookie").is_some());
        assert_eq!(res.into_string().await.as_deref(), Some("1"));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn handler_errors_still_save_and_keep_their_status() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let rocket = rocket::build()
            .attach(SessionFairing::new(manager))
            .mount("/", routes![fail]);
        let client = Client::untracked(rocket).await.expect("client");
        let res = client.get("/fail").dispatch().await;
        assert_eq!(res.status(), Status::BadRequest);
        assert!(
            res.headers().get_one("set-cookie").is_some(),
            "the flash was saved"
        );
    }
}
