//! The smallest app: a visit counter per browser on the in-memory store.
//!
//! ```sh
//! cargo run -p session-rocket --example rocket_quickstart
//! curl -c jar -b jar http://127.0.0.1:8000/   # 1, then 2, 3, ...
//! ```

use rocket::{get, launch, routes};
use session_memory::MemoryStore;
use session_rocket::{Config, Manager, Session, SessionError, SessionFairing};

#[get("/")]
async fn count(session: Session) -> Result<String, SessionError> {
    let visits = session.increment("visits", 1).await?;
    Ok(format!("{visits}\n"))
}

#[launch]
fn rocket() -> _ {
    // Secure, HttpOnly, SameSite=Lax cookies, idle and absolute timeouts:
    // the defaults. For sessions that outlive the process, swap the store
    // (make this an `async fn` to await its connect):
    // `session_redis::RedisStore::connect_lazy("redis://127.0.0.1:6379")`,
    // or `session_sql::PostgresStore::connect(url).await.expect("..")`
    // followed by `store.migrate().await.expect("..")` (creates the table) and a
    // `session_rocket::Sweeper` (deletes expired rows; README, "Store matrix").
    let manager = Manager::new(MemoryStore::new(), Config::default());
    rocket::build()
        .attach(SessionFairing::new(manager))
        .mount("/", routes![count])
}
