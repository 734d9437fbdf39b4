//! The demo on axum.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use session_axum::{Session, SessionLayer};
use session_core::Manager;

fn respond((status, body): crate::Reply) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, body).into_response()
}

/// The demo's router over `manager`.
pub fn app(manager: Manager) -> Router {
    Router::new()
        .route("/", get(|| async { respond(crate::index()) }))
        .route(
            "/set",
            get(|s: Session| async move { respond(crate::set(&s).await) }),
        )
        .route(
            "/get",
            get(|s: Session| async move { respond(crate::get(&s).await) }),
        )
        .route(
            "/delete",
            get(|s: Session| async move { respond(crate::delete(&s).await) }),
        )
        .route(
            "/clear",
            get(|s: Session| async move { respond(crate::clear(&s).await) }),
        )
        .route(
            "/destroy",
            get(|s: Session| async move { respond(crate::destroy(&s).await) }),
        )
        .route(
            "/incr",
            get(|s: Session| async move { respond(crate::incr(&s).await) }),
        )
        .route(
            "/login/{user}",
            get(|s: Session, Path(user): Path<String>| async move {
                respond(crate::login(&s, &user).await)
            }),
        )
        .route(
            "/logout",
            get(|s: Session| async move { respond(crate::logout(&s).await) }),
        )
        .route(
            "/logout-all",
            get(|s: Session| async move { respond(crate::logout_all(&s).await) }),
        )
        .route(
            "/sessions",
            get(|s: Session| async move { respond(crate::sessions(&s).await) }),
        )
        .route(
            "/sessions/end/{id}",
            get(|s: Session, Path(id): Path<String>| async move {
                respond(crate::end_session(&s, &id).await)
            }),
        )
        .route(
            "/csrf",
            get(|s: Session| async move {
                let (answer, cookie) = crate::csrf(&s).await;
                let mut response = respond(answer);
                let headers = response.headers_mut();
                if let Some(cookie) = cookie {
                    if let Ok(v) = axum::http::HeaderValue::try_from(cookie) {
                        headers.append(axum::http::header::SET_COOKIE, v);
                    }
                    for (name, value) in crate::CSRF_HEADERS {
                        headers.insert(name, axum::http::HeaderValue::from_static(value));
                    }
                }
                response
            }),
        )
        .route(
            "/app",
            get(|s: Session| async move {
                let (status, body) = crate::page(&s).await;
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = (status, axum::response::Html(body)).into_response();
                for (name, value) in crate::PAGE_HEADERS {
                    response
                        .headers_mut()
                        .insert(name, axum::http::HeaderValue::from_static(value));
                }
                response
            }),
        )
        .layer(SessionLayer::new(manager))
}

/// Serves the demo on `listener` until Ctrl-C (or forever, in tests).
///
/// # Errors
/// When the listener cannot be used or serving fails.
pub async fn serve(listener: std::net::TcpListener, manager: Manager) -> Result<(), String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    axum::serve(listener, app(manager))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

/// The demo's `main`.
pub fn main() -> std::process::ExitCode {
    crate::main_with("axum", serve)
}
