//! The smallest app: a visit counter per browser on the in-memory store.
//!
//! ```sh
//! cargo run -p session-axum --example quickstart
//! curl -c jar -b jar http://127.0.0.1:3000/   # 1, then 2, 3, ...
//! ```

use axum::{routing::get, Router};
use session_axum::{Config, Manager, Session, SessionError, SessionLayer};
use session_memory::MemoryStore;

async fn count(session: Session) -> Result<String, SessionError> {
    let visits = session.increment("visits", 1).await?;
    Ok(format!("{visits}\n"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // Secure, HttpOnly, SameSite=Lax cookies, idle and absolute timeouts:
    // the defaults. For sessions that outlive the process, swap the store:
    // `session_redis::RedisStore::connect("redis://127.0.0.1:6379").await?`,
    // or `session_sql::PostgresStore::connect(url).await?` followed by
    // `store.migrate().await?` (creates the table) and a
    // `session_axum::Sweeper` (deletes expired rows; README, "Store matrix").
    let manager = Manager::new(MemoryStore::new(), Config::default());
    let app = Router::new()
        .route("/", get(count))
        .layer(SessionLayer::new(manager));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await
}
