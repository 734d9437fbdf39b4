//! session-rocket against the shared HTTP suite, plus what only Rocket has.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use session_core::Manager;

/// Serves the Iris demo on a free loopback port, once it answers.
async fn spawn(manager: Manager) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(session_demo::rocket::serve(listener, manager));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "Rocket did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    addr
}

mod suite {
    use super::spawn;
    session_http_suite::http_suite!(spawn);
}

mod rocket_only {
    use rocket::http::Status;
    use rocket::local::asynchronous::Client;
    use rocket::{get, routes};
    use session_core::{Config, Manager};
    use session_memory::MemoryStore;
    use session_rocket::{Session, SessionFairing};

    #[get("/")]
    async fn needs_session(_s: Session) -> &'static str {
        "unreachable"
    }

    #[get("/fail")]
    async fn fail(s: Session) -> (Status, &'static str) {
        s.insert_flash("error", "it broke").await.unwrap();
        (Status::BadRequest, "bad")
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
