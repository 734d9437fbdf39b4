//! The smallest app: a visit counter per browser on the in-memory store.
//!
//! ```sh
//! cargo run -p session-actix --example actix_quickstart
//! curl -c jar -b jar http://127.0.0.1:3000/   # 1, then 2, 3, ...
//! ```

use actix_web::{web, App, HttpServer};
use session_actix::{Config, Manager, Session, SessionError, SessionMiddleware};
use session_memory::MemoryStore;

async fn count(session: Session) -> Result<String, SessionError> {
    let visits = session.increment("visits", 1).await?;
    Ok(format!("{visits}\n"))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // Secure, HttpOnly, SameSite=Lax cookies, idle and absolute timeouts:
    // the defaults. One manager shared by every worker: an in-process store
    // must be one for all of them (build a Redis store per worker instead,
    // with `RedisStore::connect_lazy` inside the closure).
    let manager = Manager::new(MemoryStore::new(), Config::default());
    HttpServer::new(move || {
        App::new()
            .wrap(SessionMiddleware::new(manager.clone()))
            .route("/", web::get().to(count))
    })
    .bind("127.0.0.1:3000")?
    .run()
    .await
}
