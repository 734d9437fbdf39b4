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

    async fn body(res: axum::response::Response) -> String {
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
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
        let cookie = res.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        assert_eq!(body(res).await, "1");
        let again = Request::get("/")
            .header("cookie", cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(body(layered.oneshot(again).await.unwrap()).await, "2");
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
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert_eq!(body(res).await, "hi");
        let pair = cookie.split(';').next().unwrap().to_owned();
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
