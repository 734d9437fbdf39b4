//! The Iris sessions demo on actix-web: `cargo run -p session-actix --example actix_demo`.
//!
//! Configured by `PORT`, `SESSION_STORE`, `SESSION_SECURE`,
//! `SESSION_IDLE_TIMEOUT` and `SESSION_ABSOLUTE_TIMEOUT`; see the
//! `session-demo` crate for the routes.

fn main() -> std::process::ExitCode {
    session_demo::actix::main()
}
