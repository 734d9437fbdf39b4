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
            "/logout-all",
            get(|s: Session| async move { respond(crate::logout_all(&s).await) }),
        )
        .layer(SessionLayer::new(manager))
}

/// Serves `app(manager)` on a listener until the task is dropped.
///
/// # Errors
/// When serving fails.
pub async fn serve(listener: tokio::net::TcpListener, manager: Manager) -> std::io::Result<()> {
    axum::serve(listener, app(manager)).await
}

/// The demo's `main`: settings from the environment, then serve until Ctrl-C.
pub fn main() -> std::process::ExitCode {
    let settings = match crate::settings_from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    crate::start_banner("axum", &settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(async {
        let (manager, _background) = settings.start().await?;
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port))
            .await
            .map_err(|e| format!("cannot listen on port {}: {e}", settings.port))?;
        axum::serve(listener, app(manager))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
