//! session-axum against the shared HTTP suite, plus what only axum has.

mod browser;
mod soak;

use std::net::SocketAddr;

use session_core::Manager;

/// Serves the Iris demo on a free loopback port.
async fn spawn(manager: Manager) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(session_demo::axum::serve(listener, manager));
    addr
}

mod suite {
    use super::spawn;
    session_http_suite::http_suite!(spawn);
}

mod axum_only {
    use axum::body::Body;
    use axum::extract::State;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use session_axum::{Session, SessionLayer};
    use session_core::{Config, Manager};
    use session_memory::MemoryStore;
    use tower::ServiceExt;

    fn manager() -> Manager {
        Manager::new(MemoryStore::new(), Config::default())
    }

    /// The `name=value` of the response's `Set-Cookie`.
    fn cookie_pair(res: &axum::response::Response) -> String {
        let cookie = res.headers()["set-cookie"].to_str().unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    /// `GET /` with the cookie `res` set.
    fn get_root_with_cookie_of(res: &axum::response::Response) -> Request<Body> {
        Request::get("/")
            .header("cookie", cookie_pair(res))
            .body(Body::empty())
            .unwrap()
    }

    async fn body(res: axum::response::Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// `SignedIn` answers 401 before the handler to a visitor and gives a
    /// signed-in request its owner; `Option<SignedIn>` takes both; a store
    /// that is down is the session's 503, not a 401.
    #[tokio::test]
    async fn signed_in_guards_a_route_and_names_the_owner() {
        use session_axum::SignedIn;
        let m = manager();
        let app = Router::new()
            .route(
                "/login",
                get(|s: Session| async move {
                    s.login("alice").await.unwrap();
                    "in"
                }),
            )
            .route("/me", get(|SignedIn(user): SignedIn| async move { user }))
            .route(
                "/maybe",
                get(|user: Option<SignedIn>| async move {
                    user.map_or("visitor".to_owned(), |SignedIn(u)| u)
                }),
            )
            .layer(SessionLayer::new(m));
        let get_path = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let res = app.clone().oneshot(get_path("/me")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = app.clone().oneshot(get_path("/maybe")).await.unwrap();
        assert_eq!(body(res).await, "visitor");
        let login = app.clone().oneshot(get_path("/login")).await.unwrap();
        let with_cookie = |path: &str| {
            Request::get(path)
                .header("cookie", cookie_pair(&login))
                .body(Body::empty())
                .unwrap()
        };
        let res = app.clone().oneshot(with_cookie("/me")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, "alice");
        let res = app.clone().oneshot(with_cookie("/maybe")).await.unwrap();
        assert_eq!(body(res).await, "alice");

        let store = session_core::testing::Instrumented::new(MemoryStore::new());
        let down = Router::new()
            .route("/me", get(|SignedIn(user): SignedIn| async move { user }))
            .route("/maybe", get(|_: Option<SignedIn>| async { "reached" }))
            .layer(SessionLayer::new(Manager::new(
                store.clone(),
                Config::default(),
            )));
        store.fail_with(Some(session_core::StoreErrorKind::Unavailable));
        for path in ["/me", "/maybe"] {
            let res = down.clone().oneshot(with_cookie(path)).await.unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        }
    }

    #[tokio::test]
    async fn a_missing_layer_is_a_500_that_says_how_to_fix_it() {
        let app = Router::new().route("/", get(|_s: Session| async { "unreachable" }));
        let res = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body(res).await.contains("SessionLayer"));
    }

    /// A `from_fn` middleware inside the layer finds the session on the
    /// request, and writes to it; outside the layer it finds none.
    #[tokio::test]
    async fn session_ext_finds_the_session_in_a_middleware_inside_the_layer() {
        use axum::extract::Request as AxumRequest;
        use axum::middleware::{self, Next};
        use session_axum::SessionExt;

        async fn count_in_middleware(req: AxumRequest, next: Next) -> axum::response::Response {
            let n = match req.session() {
                Some(s) => s.increment("seen", 1).await.unwrap().to_string(),
                None => "none".to_owned(),
            };
            let (parts, body) = req.into_parts();
            assert_eq!(parts.session().is_some(), n != "none");
            let mut res = next.run(AxumRequest::from_parts(parts, body)).await;
            res.headers_mut().insert("x-seen", n.parse().unwrap());
            res
        }
        let get_root = || Request::get("/").body(Body::empty()).unwrap();
        let outside = Router::new()
            .route("/", get(|| async { "hi" }))
            .layer(middleware::from_fn(count_in_middleware));
        let res = outside.oneshot(get_root()).await.unwrap();
        assert_eq!(res.headers()["x-seen"], "none");

        let inside = Router::new()
            .route(
                "/",
                get(|s: Session| async move { s.get_or("seen", 0i64).await.unwrap().to_string() }),
            )
            .layer(middleware::from_fn(count_in_middleware))
            .layer(SessionLayer::new(manager()));
        let res = inside.clone().oneshot(get_root()).await.unwrap();
        assert_eq!(res.headers()["x-seen"], "1");
        let again = get_root_with_cookie_of(&res);
        assert_eq!(body(res).await, "1");
        let res = inside.oneshot(again).await.unwrap();
        assert_eq!(res.headers()["x-seen"], "2");
        assert_eq!(body(res).await, "2");
    }

    #[tokio::test]
    async fn an_optional_session_is_none_without_the_layer_and_works_with_it() {
        async fn visits(s: Option<Session>) -> String {
            match s {
                Some(s) => s.increment("n", 1).await.unwrap().to_string(),
                None => "none".to_owned(),
            }
        }
        let get_root = || Request::get("/").body(Body::empty()).unwrap();
        let bare = Router::new().route("/", get(visits));
        let res = bare.oneshot(get_root()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, "none");

        let layered = Router::new()
            .route("/", get(visits))
            .layer(SessionLayer::new(manager()));
        let res = layered.clone().oneshot(get_root()).await.unwrap();
        let again = get_root_with_cookie_of(&res);
        assert_eq!(body(res).await, "1");
        assert_eq!(body(layered.oneshot(again).await.unwrap()).await, "2");
    }

    /// An outer router's layer and a nested router's, of one manager, with a
    /// middleware between them that uses the session: the request has one
    /// session, committed once, so a login in the nested
    /// handler answers its new id alone (two sessions answered two cookies,
    /// the outer one's removal of the id the login retired landing last).
    /// A layer of another manager still gives its services their own.
    #[tokio::test]
    async fn nested_layers_of_one_manager_share_the_outer_session() {
        use axum::extract::Request as AxumRequest;
        use axum::middleware::{self, Next};
        use session_axum::SessionExt;

        async fn visit(req: AxumRequest, next: Next) -> axum::response::Response {
            let session = req.session().expect("inside the outer layer");
            session.increment("visits", 1).await.unwrap();
            let path = req.uri().path().to_owned();
            session.insert("last", path).await.unwrap();
            next.run(req).await
        }
        let manager = manager();
        let api = Router::new()
            .route(
                "/login",
                get(|s: Session| async move {
                    s.login("bob").await.unwrap();
                    s.insert("name", "Bob").await.unwrap();
                    "in"
                }),
            )
            .route("/who", get(who_handler))
            .route(
                "/visits",
                get(
                    |s: Session| async move { s.get_or("visits", 0i64).await.unwrap().to_string() },
                ),
            )
            .layer(SessionLayer::new(manager.clone()));
        let app = Router::new()
            .nest("/api", api)
            .layer(middleware::from_fn(visit))
            .layer(SessionLayer::new(manager.clone()));

        let res = app
            .clone()
            .oneshot(Request::get("/api/who").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let visitor = cookie_pair(&res);
        let login = Request::get("/api/login")
            .header("cookie", &visitor)
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(login).await.unwrap();
        let cookies: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies.len(), 1, "one cookie: {cookies:?}");
        let signed_in = cookie_pair(&res);
        assert_ne!(signed_in, visitor, "the login's new id");
        let signed_in_get = |path: &str| {
            Request::get(path)
                .header("cookie", &signed_in)
                .body(Body::empty())
                .unwrap()
        };
        let res = app
            .clone()
            .oneshot(signed_in_get("/api/who"))
            .await
            .unwrap();
        assert_eq!(body(res).await, "bob/Bob");
        let res = app.oneshot(signed_in_get("/api/visits")).await.unwrap();
        assert_eq!(
            body(res).await,
            "4",
            "every request's visit, in one session"
        );

        // Another manager's layer inside: its handlers see its own session.
        let config = Config::builder().with_cookie_name("inner").build().unwrap();
        let other = Manager::new(MemoryStore::new(), config);
        let app = Router::new()
            .route("/who", get(who_handler))
            .layer(SessionLayer::new(other))
            .layer(middleware::from_fn(visit))
            .layer(SessionLayer::new(manager));
        let res = app
            .oneshot(
                Request::get("/who")
                    .header("cookie", signed_in)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(body(res).await, "-/-");
    }

    #[tokio::test]
    async fn works_with_state_and_nested_routers() {
        #[derive(Clone)]
        struct AppState {
            greeting: &'static str,
        }
        let inner = Router::new().route(
            "/hello",
            get(|State(st): State<AppState>, s: Session| async move {
                s.insert("seen", &true).await.unwrap();
                st.greeting
            }),
        );
        let app = Router::new()
            .nest("/api", inner)
            .with_state(AppState { greeting: "hi" })
            .layer(SessionLayer::new(manager()));
        let res = app
            .clone()
            .oneshot(Request::get("/api/hello").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let pair = cookie_pair(&res);
        assert_eq!(body(res).await, "hi");
        let res = app
            .oneshot(
                Request::get("/api/hello")
                    .header("cookie", pair)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(
            res.headers().get("set-cookie").is_none(),
            "same id, nothing to resend"
        );
    }

    /// What a test client sees of `/who`: the session's owner and its
    /// `name`, or `-` for either that is not there.
    async fn who(app: Router, cookie: &str) -> String {
        let req = Request::get("/who")
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap();
        body(app.oneshot(req).await.unwrap()).await
    }

    async fn who_handler(s: Session) -> String {
        session_http_suite::owner_and_name(&s).await
    }

    /// axum does not catch a handler's panic: it unwinds through the layer,
    /// which commits nothing (no deferred change saved, no commit finished on
    /// a task of its own), and the connection's task ends with it.
    #[tokio::test]
    async fn a_panic_unwinding_through_the_layer_saves_nothing() {
        let store = MemoryStore::new();
        let app = Router::new()
            .route(
                "/panic",
                get(|s: Session| async move {
                    s.insert("name", "mallory").await.unwrap();
                    panic!("the handler fails midway");
                    #[allow(unreachable_code)]
                    ""
                }),
            )
            .layer(SessionLayer::new(Manager::new(
                store.clone(),
                Config::default(),
            )));
        let req = Request::get("/panic").body(Body::empty()).unwrap();
        let joined = tokio::spawn(app.oneshot(req)).await;
        assert!(joined.expect_err("the panic reaches the task").is_panic());
        // A commit wrongly finished on a task of its own would have run by now.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            store.is_empty(),
            "the panicking handler's session was stored"
        );
    }

    /// With `tower_http`'s `CatchPanicLayer` inside the session layer, as the
    /// crate docs advise, the client gets a 500 that carries the id a `login`
    /// before the panic stored the session under; what the handler deferred
    /// after it is not saved.
    #[tokio::test]
    async fn a_caught_panic_keeps_the_login_and_drops_deferred_changes() {
        let app = Router::new()
            .route(
                "/panic",
                get(|s: Session| async move {
                    s.login("alice").await.unwrap();
                    s.insert("name", "mallory").await.unwrap();
                    panic!("the handler fails midway");
                    #[allow(unreachable_code)]
                    ""
                }),
            )
            .route("/who", get(who_handler))
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .layer(SessionLayer::new(manager()));
        let res = app
            .clone()
            .oneshot(Request::get("/panic").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(who(app, &cookie_pair(&res)).await, "alice/-");
    }

    /// A cookie of another app in another encoding (a Latin-1 `ü`, not
    /// UTF-8) in the same `Cookie` header does not hide the session's.
    #[tokio::test]
    async fn a_cookie_in_another_encoding_does_not_hide_the_session() {
        let app = Router::new()
            .route(
                "/",
                get(|s: Session| async move { s.increment("n", 1).await.unwrap().to_string() }),
            )
            .layer(SessionLayer::new(manager()));
        let res = app
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let pair = cookie_pair(&res);
        let header = [b"pref=\xfc; ".as_slice(), pair.as_bytes()].concat();
        let again = Request::get("/")
            .header(
                "cookie",
                axum::http::HeaderValue::from_bytes(&header).unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(body(app.oneshot(again).await.unwrap()).await, "2");
    }

    /// A handler's `Cache-Control` that is not UTF-8 is not read part by
    /// part (only `Cookie` is): a `no-store` inside it does not count, and a
    /// response that sets the id gets `no-store`.
    #[tokio::test]
    async fn a_cache_control_that_is_not_utf8_is_not_taken_for_no_store() {
        let app = Router::new()
            .route(
                "/",
                get(|s: Session| async move {
                    s.insert("k", 1).await.unwrap();
                    let value = axum::http::HeaderValue::from_bytes(
                        b"public, max-age=60, x=\"\xe9;no-store, y\"",
                    )
                    .unwrap();
                    ([(axum::http::header::CACHE_CONTROL, value)], "ok")
                }),
            )
            .layer(SessionLayer::new(manager()));
        let res = app
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(res.headers().get("set-cookie").is_some());
        let cache: Vec<_> = res.headers().get_all("cache-control").iter().collect();
        assert_eq!(cache, ["no-store"]);
    }

    #[tokio::test]
    async fn handler_errors_still_save_and_keep_their_status() {
        let app = Router::new()
            .route(
                "/fail",
                get(|s: Session| async move {
                    s.insert_flash("error", "it broke").await.unwrap();
                    (StatusCode::BAD_REQUEST, "bad")
                }),
            )
            .layer(SessionLayer::new(manager()));
        let res = app
            .oneshot(Request::get("/fail").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert!(
            res.headers().get("set-cookie").is_some(),
            "the flash was saved"
        );
    }
}
