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
