//! The demo on Rocket.

use rocket::http::Status;
use rocket::{get, routes, Build, Rocket};
use session_core::Manager;
use session_rocket::{Session, SessionFairing};

type Answer = (Status, String);

fn respond((status, body): crate::Reply) -> Answer {
    (
        Status::from_code(status).unwrap_or(Status::InternalServerError),
        body,
    )
}

#[get("/")]
fn index() -> Answer {
    respond(crate::index())
}

#[get("/set")]
async fn set(s: Session) -> Answer {
    respond(crate::set(&s).await)
}

#[get("/get")]
async fn get(s: Session) -> Answer {
    respond(crate::get(&s).await)
}

#[get("/delete")]
async fn delete(s: Session) -> Answer {
    respond(crate::delete(&s).await)
}

#[get("/clear")]
async fn clear(s: Session) -> Answer {
    respond(crate::clear(&s).await)
}

#[get("/destroy")]
async fn destroy(s: Session) -> Answer {
    respond(crate::destroy(&s).await)
}

#[get("/incr")]
async fn incr(s: Session) -> Answer {
    respond(crate::incr(&s).await)
}

#[get("/login/<user>")]
async fn login(s: Session, user: &str) -> Answer {
    respond(crate::login(&s, user).await)
}

#[get("/logout")]
async fn logout(s: Session) -> Answer {
    respond(crate::logout(&s).await)
}

#[get("/logout-all")]
async fn logout_all(s: Session) -> Answer {
    respond(crate::logout_all(&s).await)
}

#[get("/sessions")]
async fn sessions(s: Session) -> Answer {
    respond(crate::sessions(&s).await)
}

#[get("/sessions/end/<id>")]
async fn end_session(s: Session, id: &str) -> Answer {
    respond(crate::end_session(&s, id).await)
}

#[get("/app")]
async fn page(s: Session) -> WithHeaders<(Status, rocket::response::content::RawHtml<String>)> {
    let (status, body) = crate::page(&s).await;
    WithHeaders {
        inner: (
            Status::from_code(status).unwrap_or(Status::InternalServerError),
            rocket::response::content::RawHtml(body),
        ),
        headers: crate::PAGE_HEADERS
            .iter()
            .map(|&(name, value)| rocket::http::Header::new(name, value))
            .collect(),
    }
}

/// An answer with headers of its own added.
struct WithHeaders<R> {
    inner: R,
    headers: Vec<rocket::http::Header<'static>>,
}

impl<'r, R: rocket::response::Responder<'r, 'static>> rocket::response::Responder<'r, 'static>
    for WithHeaders<R>
{
    fn respond_to(self, req: &'r rocket::Request<'_>) -> rocket::response::Result<'static> {
        let mut response = self.inner.respond_to(req)?;
        for header in self.headers {
            // `adjoin`: a second `Set-Cookie` beside the session's.
            response.adjoin_header(header);
        }
        Ok(response)
    }
}

/// `/csrf`'s answer: the token, with the headers its handler sets (none
/// on a failure).
#[get("/csrf")]
async fn csrf(s: Session) -> WithHeaders<Answer> {
    let (answer, cookie) = crate::csrf(&s).await;
    let headers = cookie.map_or_else(Vec::new, |cookie| {
        let mut headers = vec![rocket::http::Header::new("set-cookie", cookie)];
        headers.extend(
            crate::CSRF_HEADERS
                .iter()
                .map(|&(name, value)| rocket::http::Header::new(name, value)),
        );
        headers
    });
    WithHeaders {
        inner: respond(answer),
        headers,
    }
}

/// The demo's Rocket over `manager`, on `address`.
pub fn app(manager: Manager, address: std::net::SocketAddr) -> Rocket<Build> {
    let config = rocket::Config {
        address: address.ip(),
        port: address.port(),
        log_level: rocket::config::LogLevel::Off,
        ..rocket::Config::default()
    };
    rocket::custom(config)
        .attach(SessionFairing::new(manager))
        .mount(
            "/",
            routes![
                index,
                set,
                get,
                delete,
                clear,
                destroy,
                incr,
                login,
                logout,
                logout_all,
                sessions,
                end_session,
                csrf,
                page
            ],
        )
}

/// Serves the demo on the listener's address until Ctrl-C (or forever, in
/// tests). Rocket binds by itself, so the listener only reserves the address.
///
/// # Errors
/// When Rocket cannot launch.
pub async fn serve(listener: std::net::TcpListener, manager: Manager) -> Result<(), String> {
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    drop(listener);
    serve_at(address, manager).await
}

/// Serves the demo on `address` until Ctrl-C (or forever, in tests).
///
/// # Errors
/// When Rocket cannot launch (the address is taken, for one).
pub async fn serve_at(address: std::net::SocketAddr, manager: Manager) -> Result<(), String> {
    app(manager, address)
        .launch()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The demo's `main`.
pub fn main() -> std::process::ExitCode {
    crate::main_with("Rocket", serve)
}
