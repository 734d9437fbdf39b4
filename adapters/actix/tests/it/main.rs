//! session-actix against the shared HTTP suite, plus what only actix-web has.

use std::net::SocketAddr;

use session_core::Manager;

/// Serves the Iris demo on a free loopback port.
async fn spawn(manager: Manager) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(session_demo::actix::serve(listener, manager));
    addr
}

mod suite {
    use super::spawn;
    session_http_suite::http_suite!(spawn);
}

mod actix_only {
    use actix_web::{test, web, App, HttpResponse};
    use session_actix::{Session, SessionMiddleware};
    use session_core::{Config, Manager};
    use session_memory::MemoryStore;

    /// The `name=value` pair of the `Set-Cookie` header in `headers`.
    fn session_cookie(headers: &actix_web::http::header::HeaderMap) -> String {
        let set_cookie = headers.get("set-cookie").expect("a session cookie");
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        pair.to_owned()
    }

    #[actix_web::test]
    async fn a_missing_middleware_is_a_500_that_says_how_to_fix_it() {
        let app = test::init_service(App::new().route(
            "/",
            web::get().to(|_s: Session| async { HttpResponse::Ok().finish() }),
        ))
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 500);
        let body = test::read_body(res).await;
        assert!(String::from_utf8_lossy(&body).contains("SessionMiddleware"));
    }

    /// `SignedIn` answers 401 before the handler to a visitor, gives a
    /// signed-in request its owner, and answers a store that is down with
    /// the session's 503.
    #[actix_web::test]
    async fn signed_in_guards_a_route_and_names_the_owner() {
        use session_actix::SignedIn;
        let store = session_core::testing::Instrumented::new(MemoryStore::new());
        let manager = Manager::new(store.clone(), Config::default());
        let app = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(manager))
                .route(
                    "/login",
                    web::get().to(|s: Session| async move {
                        s.login("alice").await.unwrap();
                        HttpResponse::Ok().finish()
                    }),
                )
                .route(
                    "/me",
                    web::get().to(|SignedIn(user): SignedIn| async move { user }),
                ),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/me").to_request()).await;
        assert_eq!(res.status(), 401);
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/login").to_request()).await;
        let cookie = session_cookie(res.headers());
        let me = || {
            test::TestRequest::get()
                .uri("/me")
                .insert_header(("cookie", cookie.clone()))
                .to_request()
        };
        let res = test::call_service(&app, me()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(test::read_body(res).await, "alice");
        store.fail_with(Some(session_core::StoreErrorKind::Unavailable));
        let res = test::call_service(&app, me()).await;
        assert_eq!(res.status(), 503);
    }

    #[actix_web::test]
    async fn session_ext_finds_the_session_in_handlers_and_middleware() {
        use actix_web::dev::Service as _;
        use actix_web::HttpRequest;
        use session_actix::SessionExt;

        async fn visits(req: HttpRequest) -> HttpResponse {
            match req.session() {
                Some(s) => HttpResponse::Ok().body(s.increment("n", 1).await.unwrap().to_string()),
                None => HttpResponse::Ok().body("none"),
            }
        }
        let bare = test::init_service(App::new().route("/", web::get().to(visits))).await;
        let res = test::call_service(&bare, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(test::read_body(res).await, "none");

        // A middleware inside the session middleware reads the session from
        // the ServiceRequest (here: who is asking, for a log line).
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let app = test::init_service(
            App::new()
                .wrap_fn(|req, srv| {
                    let seen = req.session().is_some();
                    let fut = srv.call(req);
                    async move {
                        let mut res = fut.await?;
                        res.headers_mut().insert(
                            actix_web::http::header::HeaderName::from_static("x-session-seen"),
                            actix_web::http::header::HeaderValue::from_static(if seen {
                                "yes"
                            } else {
                                "no"
                            }),
                        );
                        Ok(res)
                    }
                })
                .wrap(SessionMiddleware::new(manager))
                .route("/", web::get().to(visits)),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.headers().get("x-session-seen").unwrap(), "yes");
        let cookie = session_cookie(res.headers());
        assert_eq!(test::read_body(res).await, "1");
        let again = test::TestRequest::get()
            .uri("/")
            .insert_header(("cookie", cookie))
            .to_request();
        assert_eq!(
            test::read_body(test::call_service(&app, again).await).await,
            "2"
        );
    }

    /// The app's middleware and a scope's, of one manager, with a middleware
    /// between them that writes to the session: the request has one session,
    /// committed once, so a login in the scope answers its new id alone (two
    /// sessions answered two cookies, the outer one's removal of the id the
    /// login retired landing last). A middleware of another manager still
    /// gives its services their own.
    #[actix_web::test]
    async fn nested_middlewares_of_one_manager_share_the_outer_session() {
        use actix_web::dev::Service as _;
        use session_actix::SessionExt;

        async fn who(s: Session) -> String {
            session_http_suite::owner_and_name(&s).await
        }
        async fn login(s: Session) -> &'static str {
            s.login("bob").await.unwrap();
            s.insert("name", "Bob").await.unwrap();
            "in"
        }
        async fn visits(s: Session) -> String {
            s.get_or("visits", 0i64).await.unwrap().to_string()
        }
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let app = test::init_service(
            App::new()
                .service(
                    web::scope("/api")
                        .wrap(SessionMiddleware::new(manager.clone()))
                        .route("/who", web::get().to(who))
                        .route("/login", web::get().to(login))
                        .route("/visits", web::get().to(visits)),
                )
                .wrap_fn(|req, srv| {
                    let session = req.session().expect("inside the outer middleware");
                    let path = req.path().to_owned();
                    let answer = srv.call(req);
                    async move {
                        session.increment("visits", 1).await.unwrap();
                        session.insert("last", path).await.unwrap();
                        answer.await
                    }
                })
                .wrap(SessionMiddleware::new(manager.clone())),
        )
        .await;
        let get = |path: &str, cookie: Option<&str>| {
            let req = test::TestRequest::get().uri(path);
            match cookie {
                Some(cookie) => req.insert_header(("cookie", cookie.to_owned())),
                None => req,
            }
            .to_request()
        };
        let res = test::call_service(&app, get("/api/who", None)).await;
        let visitor = session_cookie(res.headers());
        let res = test::call_service(&app, get("/api/login", Some(&visitor))).await;
        let cookies: Vec<_> = res.headers().get_all("set-cookie").collect();
        assert_eq!(cookies.len(), 1, "one cookie: {cookies:?}");
        let signed_in = session_cookie(res.headers());
        assert_ne!(signed_in, visitor, "the login's new id");
        let res = test::call_service(&app, get("/api/who", Some(&signed_in))).await;
        assert_eq!(test::read_body(res).await, "bob/Bob");
        let res = test::call_service(&app, get("/api/visits", Some(&signed_in))).await;
        assert_eq!(
            test::read_body(res).await,
            "4",
            "every request's visit, in one session"
        );

        // Another manager's middleware inside: its services see their own
        // session.
        let config = Config::builder().with_cookie_name("inner").build().unwrap();
        let other = Manager::new(MemoryStore::new(), config);
        let app = test::init_service(
            App::new()
                .service(
                    web::scope("/api")
                        .wrap(SessionMiddleware::new(other))
                        .route("/who", web::get().to(who)),
                )
                .wrap(SessionMiddleware::new(manager)),
        )
        .await;
        let res = test::call_service(&app, get("/api/who", Some(&signed_in))).await;
        assert_eq!(test::read_body(res).await, "-/-");
    }

    /// A middleware inside ours reads the session from the response, after
    /// the handler; without our middleware there is none.
    #[actix_web::test]
    async fn session_ext_finds_the_session_on_responses_inside_the_middleware() {
        use actix_web::body::MessageBody;
        use actix_web::dev::{Service as _, ServiceResponse};
        use session_actix::SessionExt;

        /// Tells in a header whether the response's request has a session,
        /// and what the handler counted.
        async fn tag<B: MessageBody>(
            answer: impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
        ) -> Result<ServiceResponse<B>, actix_web::Error> {
            let mut res = answer.await?;
            let seen = match res.session() {
                Some(s) => s.get_or("n", 0i64).await.unwrap().to_string(),
                None => "none".to_owned(),
            };
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-seen"),
                actix_web::http::header::HeaderValue::from_str(&seen).unwrap(),
            );
            Ok(res)
        }
        async fn visits(s: Option<Session>) -> String {
            match s {
                Some(s) => s.increment("n", 1).await.unwrap().to_string(),
                None => "none".to_owned(),
            }
        }
        let bare = test::init_service(
            App::new()
                .wrap_fn(|req, srv| tag(srv.call(req)))
                .route("/", web::get().to(visits)),
        )
        .await;
        let res = test::call_service(&bare, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.headers().get("x-seen").unwrap(), "none");

        let manager = Manager::new(MemoryStore::new(), Config::default());
        let app = test::init_service(
            App::new()
                .wrap_fn(|req, srv| tag(srv.call(req)))
                .wrap(SessionMiddleware::new(manager))
                .route("/", web::get().to(visits)),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.headers().get("x-seen").unwrap(), "1");
        assert_eq!(test::read_body(res).await, "1");
    }

    /// Sends `/` through an app where a middleware inside ours turns the
    /// request away with an error (an authorization check, say) after
    /// writing to the session, and returns that error: the server would
    /// answer with its response.
    async fn turned_away(manager: Manager) -> actix_web::Error {
        use actix_web::body::BoxBody;
        use actix_web::dev::{Service as _, ServiceResponse};
        use session_actix::SessionExt;

        let app = test::init_service(
            App::new()
                .wrap_fn(|req, _inner| {
                    let session = req.session();
                    async move {
                        let session = session.expect("inside the session middleware");
                        session.insert("turned_away", true).await.unwrap();
                        Err::<ServiceResponse<BoxBody>, _>(actix_web::error::ErrorUnauthorized(
                            "sign in first",
                        ))
                    }
                })
                .wrap(SessionMiddleware::new(manager))
                .route("/", web::get().to(|| async { "never reached" })),
        )
        .await;
        match app
            .call(test::TestRequest::get().uri("/").to_request())
            .await
        {
            Ok(res) => panic!("the error became {}", res.status()),
            Err(error) => error,
        }
    }

    /// The middleware's error stays an error for the middlewares outside,
    /// and its response carries the session's cookie: the session was
    /// committed.
    #[actix_web::test]
    async fn an_inner_middlewares_error_still_commits_the_session() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let error = turned_away(manager.clone()).await;
        // Outer middlewares find their own error inside, and may ask for
        // the response more than once.
        let committed = error
            .as_error::<session_actix::CommittedError>()
            .expect("the session's wrapper");
        assert!(committed
            .inner()
            .as_error::<actix_web::error::InternalError<&str>>()
            .is_some());
        assert_eq!(error.as_response_error().status_code(), 401);
        assert!(error.error_response().headers().get("set-cookie").is_some());
        let res = error.error_response();
        assert_eq!(res.status(), 401);
        let cookie = session_cookie(res.headers());
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert_eq!(body, "sign in first");
        let s = manager.session_from_cookies([cookie.as_str()]);
        assert_eq!(s.get::<bool>("turned_away").await.unwrap(), Some(true));
    }

    /// The same, with a store that fails the commit: the failed commit's
    /// status, uncacheable, as every failed commit answers.
    #[actix_web::test]
    async fn an_inner_middlewares_error_under_a_failed_commit_is_the_commits_503() {
        use session_core::testing::Instrumented;
        use session_core::StoreErrorKind;

        let store = Instrumented::new(MemoryStore::new());
        store.fail_with(Some(StoreErrorKind::Unavailable));
        let error = turned_away(Manager::new(store, Config::default())).await;
        assert_eq!(error.as_response_error().status_code(), 503);
        let committed = error
            .as_error::<session_actix::CommittedError>()
            .expect("the session's wrapper");
        assert!(
            committed
                .inner()
                .as_error::<actix_web::error::InternalError<&str>>()
                .is_some(),
            "the middleware's own error is still inside"
        );
        let res = error.error_response();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        assert!(
            res.headers().get("set-cookie").is_none(),
            "nothing was stored"
        );
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        assert!(body.is_empty(), "a failed commit answers bare: {body:?}");
    }

    /// A middleware's error on a request whose session leaves the client's
    /// cookie as it is reaches the middlewares outside as it came.
    #[actix_web::test]
    async fn an_inner_middlewares_error_that_changes_no_cookie_passes_as_it_came() {
        use actix_web::body::BoxBody;
        use actix_web::dev::{Service as _, ServiceResponse};

        let manager = Manager::new(MemoryStore::new(), Config::default());
        let app = test::init_service(
            App::new()
                .wrap_fn(|_req, _inner| async {
                    Err::<ServiceResponse<BoxBody>, _>(actix_web::error::ErrorForbidden("no"))
                })
                .wrap(SessionMiddleware::new(manager))
                .route("/", web::get().to(|| async { "never reached" })),
        )
        .await;
        let error = match app
            .call(test::TestRequest::get().uri("/").to_request())
            .await
        {
            Ok(res) => panic!("the error became {}", res.status()),
            Err(error) => error,
        };
        assert!(error
            .as_error::<actix_web::error::InternalError<&str>>()
            .is_some());
        assert!(error.as_error::<session_actix::CommittedError>().is_none());
        assert_eq!(error.as_response_error().status_code(), 403);
    }

    /// `?` on a session call in a handler that returns `actix_web::Result`:
    /// a failing store answers the same bare 503 as `SessionError`.
    #[actix_web::test]
    async fn session_errors_convert_into_actix_errors() {
        use session_core::testing::Instrumented;
        use session_core::StoreErrorKind;

        async fn visits(session: Session) -> actix_web::Result<String> {
            Ok(session.increment("n", 1).await?.to_string())
        }
        let store = Instrumented::new(MemoryStore::new());
        let manager = Manager::new(store.clone(), Config::default());
        let app = test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(manager))
                .route("/", web::get().to(visits)),
        )
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 200);
        store.fail_with(Some(StoreErrorKind::Unavailable));
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 503);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert_eq!(test::read_body(res).await, "Service Unavailable");
    }

    /// actix-web does not catch a handler's panic: it unwinds through the
    /// middleware, which commits nothing (no deferred change saved), and the
    /// connection's task ends with it.
    #[actix_web::test]
    async fn a_panic_unwinding_through_the_middleware_saves_nothing() {
        let store = MemoryStore::new();
        let manager = Manager::new(store.clone(), Config::default());
        let app = test::init_service(App::new().wrap(SessionMiddleware::new(manager)).route(
            "/panic",
            web::get().to(|s: Session| async move {
                s.insert("name", "mallory").await.unwrap();
                panic!("the handler fails midway");
                #[allow(unreachable_code)]
                HttpResponse::Ok().finish()
            }),
        ))
        .await;
        let req = test::TestRequest::get().uri("/panic").to_request();
        let joined = actix_web::rt::spawn(async move {
            test::call_service(&app, req).await;
        })
        .await;
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

    /// A cookie of another app in another encoding (a Latin-1 `ü`, not
    /// UTF-8) in the same `Cookie` header does not hide the session's.
    #[actix_web::test]
    async fn a_cookie_in_another_encoding_does_not_hide_the_session() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let app = test::init_service(App::new().wrap(SessionMiddleware::new(manager)).route(
            "/",
            web::get().to(|s: Session| async move {
                HttpResponse::Ok().body(s.increment("n", 1).await.unwrap().to_string())
            }),
        ))
        .await;
        let res = test::call_service(&app, test::TestRequest::get().uri("/").to_request()).await;
        let pair = session_cookie(res.headers());
        let header = [b"pref=\xfc; ".as_slice(), pair.as_bytes()].concat();
        let again = test::TestRequest::get()
            .uri("/")
            .insert_header((
                "cookie",
                actix_web::http::header::HeaderValue::from_bytes(&header).unwrap(),
            ))
            .to_request();
        let res = test::call_service(&app, again).await;
        assert_eq!(test::read_body(res).await, "2");
    }

    #[actix_web::test]
    async fn handler_errors_still_save_and_keep_their_status() {
        let manager = Manager::new(MemoryStore::new(), Config::default());
        let app = test::init_service(App::new().wrap(SessionMiddleware::new(manager)).route(
            "/fail",
            web::get().to(|s: Session| async move {
                s.insert_flash("error", "it broke").await.unwrap();
                HttpResponse::BadRequest().body("bad")
            }),
        ))
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/fail").to_request()).await;
        assert_eq!(res.status(), 400);
        assert!(
            res.headers().get("set-cookie").is_some(),
            "the flash was saved"
        );
    }
}
