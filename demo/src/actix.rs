//! The demo on actix-web.

use actix_web::http::StatusCode;
use actix_web::{guard, web, App, HttpResponse, HttpServer};
use session_actix::{Session, SessionMiddleware};
use session_core::Manager;

fn respond((status, body): crate::Reply) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// A route for `GET` and `HEAD`, as axum's `get` and Rocket's `#[get]`
/// serve both (actix-web's `web::get` answers `HEAD` with 405).
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The demo's routes (to mount inside an `App` wrapped in the middleware).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", get().to(|| async { respond(crate::index()) }))
        .route(
            "/set",
            get().to(|s: Session| async move { respond(crate::set(&s).await) }),
        )
        .route(
            "/get",
            get().to(|s: Session| async move { respond(crate::get(&s).await) }),
        )
        .route(
            "/delete",
            get().to(|s: Session| async move { respond(crate::delete(&s).await) }),
        )
        .route(
            "/clear",
            get().to(|s: Session| async move { respond(crate::clear(&s).await) }),
        )
        .route(
            "/destroy",
            get().to(|s: Session| async move { respond(crate::destroy(&s).await) }),
        )
        .route(
            "/incr",
            get().to(|s: Session| async move { respond(crate::incr(&s).await) }),
        )
        .route(
            "/login/{user}",
            get().to(|s: Session, user: web::Path<String>| async move {
                respond(crate::login(&s, &user).await)
            }),
        )
        .route(
            "/logout",
            get().to(|s: Session| async move { respond(crate::logout(&s).await) }),
        )
        .route(
            "/logout-all",
            get().to(|s: Session| async move { respond(crate::logout_all(&s).await) }),
        )
        .route(
            "/sessions",
            get().to(|s: Session| async move { respond(crate::sessions(&s).await) }),
        )
        .route(
            "/sessions/end/{id}",
            get().to(|s: Session, id: web::Path<String>| async move {
                respond(crate::end_session(&s, &id).await)
            }),
        )
        .route(
            "/csrf",
            get().to(|s: Session| async move {
                let (answer, cookie) = crate::csrf(&s).await;
                let mut response = respond(answer);
                if let Some(cookie) = cookie {
                    if let Ok(v) = actix_web::http::header::HeaderValue::try_from(cookie) {
                        response
                            .headers_mut()
                            .append(actix_web::http::header::SET_COOKIE, v);
                    }
                    for (name, value) in crate::CSRF_HEADERS {
                        response.headers_mut().insert(
                            actix_web::http::header::HeaderName::from_static(name),
                            actix_web::http::header::HeaderValue::from_static(value),
                        );
                    }
                }
                response
            }),
        )
        .route(
            "/app",
            get().to(|s: Session| async move {
                let (status, body) = crate::page(&s).await;
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = HttpResponse::build(status);
                response.content_type("text/html; charset=utf-8");
                for header in crate::PAGE_HEADERS {
                    response.insert_header(header);
                }
                response.body(body)
            }),
        );
}

/// The demo's server on `listener` (two workers), ready to be awaited.
///
/// # Errors
/// When the listener cannot be used.
pub fn server(
    listener: std::net::TcpListener,
    manager: Manager,
) -> Result<actix_web::dev::Server, String> {
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(SessionMiddleware::new(manager.clone()))
            .configure(routes)
    })
    .workers(2)
    .listen(listener)
    .map_err(|e| e.to_string())?
    .run())
}

/// Serves the demo on `listener` until Ctrl-C (or forever, in tests).
///
/// # Errors
/// When the listener cannot be used or serving fails.
pub async fn serve(listener: std::net::TcpListener, manager: Manager) -> Result<(), String> {
    let server = server(listener, manager)?;
    server.await.map_err(|e| e.to_string())
}

/// The demo's `main`.
pub fn main() -> std::process::ExitCode {
    crate::main_with("actix-web", serve)
}
