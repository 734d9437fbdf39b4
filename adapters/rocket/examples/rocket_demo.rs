//! The Iris sessions demo on Rocket: `cargo run -p session-rocket --example rocket_demo`.
//!
//! Configured by `PORT`, `SESSION_STORE`, `SESSION_SECURE`,
//! `SESSION_IDLE_TIMEOUT` and `SESSION_ABSOLUTE_TIMEOUT`; see the
//! `session-demo` crate for the routes.

fn main() -> std::process::ExitCode {
    session_demo::rocket::main()
}
