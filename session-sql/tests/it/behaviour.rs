//! What the conformance suite does not cover: the sweeper, migrations run
//! twice, undecodable rows, and a database that hangs or goes away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::testing::{
    acknowledged_writes_survive_cuts, manager_with_timeout, read_name as read,
    stored_session as stored, FaultProxy, Instrumented,
};
use session_core::{Error, Id, Manager, Record, Store, Sweeper, Timestamp};
use session_sql::{MySqlStore, PostgresStore, SqliteStore};

use crate::support::{self, record};

/// A record that expired `expired_by` ago.
fn expired_record(expired_by: Duration) -> Record {
    let now = Timestamp::now();
    Record::new(
        Id::generate().expect("random").record_id(),
        now - expired_by,
        now - expired_by,
    )
}

/// Creates `n` rows that expired ten seconds ago.
async fn create_expired(store: &impl Store, n: usize) {
    for _ in 0..n {
        store
            .create(&expired_record(Duration::from_secs(10)))
            .await
            .expect("create");
    }
}

/// 2 500 expired rows (more than two sweep batches) and a few live ones: a
/// sweep removes exactly the expired ones and says how many; the sweeper
/// does the same on its own, and stops when told.
async fn sweeper_removes_expired_rows_in_batches(store: impl Store + Clone) {
    let mut live = Vec::new();
    for _ in 0..5 {
        let r = record(Duration::from_secs(3600));
        store.create(&r).await.expect("create");
        live.push(r);
    }
    create_expired(&store, 2_500).await;
    assert_eq!(store.delete_expired().await.expect("sweep"), 2_500);
    assert_eq!(store.delete_expired().await.expect("sweep again"), 0);

    create_expired(&store, 2_500).await;
    let counted = Instrumented::new(store.clone());
    let sweeper = Sweeper::spawn(Arc::new(counted.clone()), Sweeper::MIN_INTERVAL);
    // The sweeper's second sweep starts once its first has finished.
    let deadline = Instant::now() + Duration::from_secs(20);
    while counted.counts().other < 2 {
        assert!(
            Instant::now() < deadline,
            "the sweeper did not sweep twice in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sweeper.stop().await;
    assert_eq!(
        store.delete_expired().await.expect("sweep"),
        0,
        "expired rows were left to the manual sweep"
    );
    for r in &live {
        assert!(
            store.load(&r.id).await.expect("load").is_some(),
            "a live row was swept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_on_postgres() {
    if let Some(store) = support::postgres().await {
        sweeper_removes_expired_rows_in_batches(Arc::new(store)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_on_mysql() {
    if let Some(store) = support::mysql().await {
        sweeper_removes_expired_rows_in_batches(Arc::new(store)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_on_sqlite() {
    sweeper_removes_expired_rows_in_batches(Arc::new(support::sqlite_file().await)).await;
}

/// `delete_all` over more rows than a batch while another task creates
/// sessions all along: it ends (the rows created during the call may stay),
/// rather than going on for as long as each batch finds a few new rows.
async fn delete_all_ends_while_sessions_are_created(store: impl Store + Clone) {
    let rows = usize::try_from(session_sql::SWEEP_BATCH).unwrap() * 2;
    for _ in 0..rows {
        store
            .create(&record(Duration::from_secs(3600)))
            .await
            .expect("create");
    }
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Several at once: each batch of the call finds new rows.
    let creating: Vec<_> = (0..8)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    store
                        .create(&record(Duration::from_secs(3600)))
                        .await
                        .expect("create");
                }
            })
        })
        .collect();
    let deleted = tokio::time::timeout(Duration::from_secs(20), store.delete_all())
        .await
        .expect("delete_all ended")
        .expect("delete_all");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for task in creating {
        task.await.expect("join");
    }
    assert!(
        deleted >= rows as u64,
        "{deleted} of the {rows} rows before the call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_ends_while_sessions_are_created_on_postgres() {
    if let Some(store) = support::postgres().await {
        delete_all_ends_while_sessions_are_created(Arc::new(store)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_ends_while_sessions_are_created_on_mysql() {
    if let Some(store) = support::mysql().await {
        delete_all_ends_while_sessions_are_created(Arc::new(store)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_ends_while_sessions_are_created_on_sqlite() {
    delete_all_ends_while_sessions_are_created(Arc::new(support::sqlite_file().await)).await;
}

/// A sweep that picked a row just past its deadline while a save or touch
/// was extending it leaves the extended session alone. The row's committed
/// deadline has passed while a transaction holds an update that extends it;
/// the sweep waits for that row, and must check the deadline again once the
/// update commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_never_deletes_a_session_extended_while_it_waited() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let store = Arc::new(store);
    let r = record(Duration::from_secs(3600));
    store.create(&r).await.expect("create");
    let table = support::pg_table(store.inner());
    let past = Timestamp::now().unix_millis() - 1_000;
    sqlx::query(&format!("UPDATE {table} SET expires_at = $1 WHERE id = $2"))
        .bind(past)
        .bind(&r.id.as_bytes()[..])
        .execute(store.inner().pool())
        .await
        .expect("expire it");
    let mut touch = store.inner().pool().begin().await.expect("begin");
    sqlx::query(&format!("UPDATE {table} SET expires_at = $1 WHERE id = $2"))
        .bind(r.expires_at.unix_millis())
        .bind(&r.id.as_bytes()[..])
        .execute(&mut *touch)
        .await
        .expect("extend it");
    let sweeping = tokio::spawn({
        let store = store.clone();
        async move { store.delete_expired().await }
    });
    // The sweep is now waiting for the row's lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !sweeping.is_finished(),
        "the sweep did not wait for the row"
    );
    touch.commit().await.expect("commit");
    assert_eq!(sweeping.await.expect("join").expect("sweep"), 0);
    assert!(
        store.load(&r.id).await.expect("load").is_some(),
        "the extended session was swept"
    );
}

/// A `create` whose id an expired row holds, where a sweep deletes that row
/// between the create's insert and its own delete of the expired row, which
/// then frees nothing: the id is free, so the create inserts (answering
/// `IdTaken` for an id no live session holds broke the contract). A trigger
/// plays the sweep: it deletes the row itself and skips the create's delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_create_whose_expired_row_a_sweep_took_first_creates() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let store = store.inner();
    let table = support::pg_table(store);
    let schema = store.table().schema().expect("a schema");
    let old = expired_record(Duration::from_secs(10));
    store.create(&old).await.expect("create");
    for statement in [
        format!(
            "CREATE FUNCTION \"{schema}\".swept_first() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF pg_trigger_depth() = 1 THEN \
                 DELETE FROM {table} WHERE id = OLD.id; \
                 RETURN NULL; \
               END IF; \
               RETURN OLD; \
             END $$"
        ),
        format!(
            "CREATE TRIGGER swept_first BEFORE DELETE ON {table} \
             FOR EACH ROW EXECUTE FUNCTION \"{schema}\".swept_first()"
        ),
    ] {
        sqlx::query(&statement)
            .execute(store.pool())
            .await
            .expect("the sweep's trigger");
    }
    let mut new = record(Duration::from_secs(3600));
    new.id = old.id;
    assert_eq!(
        store.create(&new).await.expect("create"),
        session_core::Created::Created
    );
    let loaded = store.load(&new.id).await.expect("load").expect("live");
    assert_eq!(loaded.expires_at, new.expires_at);
}

/// Eight instances starting together on a database nobody has migrated
/// (`reset` just dropped what `migrate` creates): every `migrate` succeeds,
/// and the table works.
async fn concurrent_migrations_all_succeed<S: Store + Migrate>(store: &S, reset: &str) {
    store.execute(reset).await;
    let results = futures_util::future::join_all((0..8).map(|_| store.migrate_now())).await;
    for r in results {
        r.expect("a concurrent migrate");
    }
    let r = record(Duration::from_secs(3600));
    store.create(&r).await.expect("create");
    assert!(store.load(&r.id).await.expect("load").is_some());
}

/// What the concurrent-migration test needs of a store.
trait Migrate {
    async fn execute(&self, statement: &str);
    async fn migrate_now(&self) -> Result<(), session_sql::SqlStoreError>;
}

macro_rules! migrate_impl {
    ($store:ty) => {
        impl Migrate for $store {
            async fn execute(&self, statement: &str) {
                sqlx::query(statement)
                    .execute(self.pool())
                    .await
                    .expect("statement");
            }
            async fn migrate_now(&self) -> Result<(), session_sql::SqlStoreError> {
                self.migrate().await
            }
        }
    };
}
migrate_impl!(PostgresStore);
migrate_impl!(MySqlStore);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_all_migrate() {
    if let Some(pg) = support::postgres().await {
        let store = pg.inner().clone();
        let schema = store.table().schema().expect("a schema").to_owned();
        let drop = format!("DROP SCHEMA \"{schema}\" CASCADE");
        concurrent_migrations_all_succeed(&store, &drop).await;
    }
    if let Some(my) = support::mysql().await {
        let store = my.inner().clone();
        let name = store.table().name().to_owned();
        let drop = format!("DROP TABLE `{name}`, `{name}_migrations`");
        concurrent_migrations_all_succeed(&store, &drop).await;
    }
}

/// The same on a PostgreSQL whose transactions default to a stricter
/// isolation: the instance that waited for the lock still sees what the one
/// before it recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_all_migrate_under_strict_isolation() {
    use sqlx::Executor as _;
    let Some(pg) = support::postgres().await else {
        return;
    };
    let schema = pg.inner().table().schema().expect("a schema").to_owned();
    let drop = format!("DROP SCHEMA \"{schema}\" CASCADE");
    for isolation in ["repeatable read", "serializable"] {
        let set = format!("SET default_transaction_isolation = '{isolation}'");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .after_connect(move |conn, _| {
                let set = set.clone();
                Box::pin(async move {
                    conn.execute(set.as_str()).await?;
                    Ok(())
                })
            })
            .connect(&support::postgres_url())
            .await
            .expect("a pool");
        let store = PostgresStore::from_pool(pool).with_table(pg.inner().table().clone());
        concurrent_migrations_all_succeed(&store, &drop).await;
    }
}

/// Tables whose names differ only by case, in one PostgreSQL schema, each get
/// their own indexes (unquoted index names would fold to one).
#[tokio::test]
async fn tables_named_apart_by_case_each_get_their_indexes() {
    let Some(pg) = support::postgres().await else {
        return;
    };
    let schema = pg.inner().table().schema().expect("a schema").to_owned();
    let upper = pg.inner().clone().with_table(
        session_sql::Table::new("Sessions")
            .expect("name")
            .with_schema(&schema)
            .expect("schema"),
    );
    upper.migrate().await.expect("migrate");
    for table in ["sessions", "Sessions"] {
        let indexes: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
        )
        .bind(&schema)
        .bind(table)
        .fetch_one(pg.inner().pool())
        .await
        .expect("count");
        assert_eq!(indexes, 3, "{table}: the key, expires_at and owner");
    }
}

/// `url` with the user `user:password`.
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("url");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{user}:app-password@{rest}")
}

/// Runs its clean-up when dropped, even after a failed assertion (what
/// outlives a test's schema or table: a database user).
struct OnDrop(Option<Box<dyn FnOnce() + Send>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take() {
            cleanup();
        }
    }
}

/// Runs `statements` on a pool of `url`'s, from a thread of its own.
fn run_later<DB: sqlx::Database>(url: String, statements: Vec<String>) -> OnDrop
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    OnDrop(Some(Box::new(move || {
        support::block_on_thread(move || async move {
            let Ok(pool) = sqlx::Pool::<DB>::connect(&url).await else {
                return;
            };
            for statement in statements {
                let _ = sqlx::query::<DB>(&statement).execute(&pool).await;
            }
        });
    })))
}

/// An app whose database user may read and write the tables but not
/// create anything calls `migrate` at start, after a deploy step (here the
/// test's own user) has migrated the database.
async fn an_app_user_without_ddl_rights_can_migrate<S: Store + Migrate>(
    app: Result<S, session_sql::SqlStoreError>,
) {
    let app = app.expect("connect as the app's user");
    app.migrate_now()
        .await
        .expect("migrate as a user that may not create anything");
    let r = record(Duration::from_secs(3600));
    app.create(&r).await.expect("create");
    assert!(app.load(&r.id).await.expect("load").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_user_without_ddl_rights_migrates_an_up_to_date_database() {
    if let Some(pg) = support::postgres().await {
        let owner = pg.inner();
        let schema = owner.table().schema().expect("a schema").to_owned();
        let user = support::unique("app_");
        let _drop = run_later::<sqlx::Postgres>(
            support::postgres_url(),
            vec![format!("DROP OWNED BY {user}"), format!("DROP ROLE {user}")],
        );
        for statement in [
            format!("CREATE ROLE {user} LOGIN PASSWORD 'app-password'"),
            format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {user}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO {user}"
            ),
        ] {
            owner.execute(&statement).await;
        }
        let url = as_user(&support::postgres_url(), &user);
        let app = PostgresStore::connect(&url)
            .await
            .map(|s| s.with_table(owner.table().clone()));
        an_app_user_without_ddl_rights_can_migrate(app).await;
    }
    if let Some(my) = support::mysql().await {
        let owner = my.inner();
        let table = owner.table().name().to_owned();
        let user = support::unique("app_");
        let _drop = run_later::<sqlx::MySql>(
            support::mysql_url(),
            vec![format!("DROP USER '{user}'@'%'")],
        );
        owner
            .execute(&format!(
                "CREATE USER '{user}'@'%' IDENTIFIED BY 'app-password'"
            ))
            .await;
        for t in [table.clone(), format!("{table}_migrations")] {
            owner
                .execute(&format!(
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON `{t}` TO '{user}'@'%'"
                ))
                .await;
        }
        let url = as_user(&support::mysql_url(), &user);
        let app = MySqlStore::connect(&url)
            .await
            .map(|s| s.with_table(owner.table().clone()));
        an_app_user_without_ddl_rights_can_migrate(app).await;
    }
}

/// An in-memory SQLite database lives in its pool's one connection:
/// migrating a second table must not close it.
#[tokio::test]
async fn migrating_a_second_table_keeps_an_in_memory_databases_first() {
    let first = support::sqlite_memory().await;
    let r = record(Duration::from_secs(3600));
    first.create(&r).await.expect("create");
    let second = first
        .clone()
        .with_table(session_sql::Table::new("admin_sessions").expect("name"));
    second.migrate().await.expect("migrate a second table");
    assert!(
        first.load(&r.id).await.expect("load").is_some(),
        "the first table's sessions are gone"
    );
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let store = support::sqlite_memory().await;
    store.migrate().await.expect("again");
    store.migrate().await.expect("and again");
    if let Some(pg) = support::postgres().await {
        pg.inner().migrate().await.expect("again on postgres");
    }
    if let Some(my) = support::mysql().await {
        my.inner().migrate().await.expect("again on mysql");
    }
}

/// Every migration's statements run again over the tables they made, as
/// after a crash between a migration's DDL (which MySQL commits at once)
/// and the row that records it: `migrate` then succeeds and the sessions
/// stored before are still there.
async fn migrations_run_again_over_their_own_tables<S: Store>(
    store: &S,
    migrate: impl std::future::Future<Output = Result<(), session_sql::SqlStoreError>>,
) {
    let r = record(Duration::from_secs(3600));
    store.create(&r).await.expect("create");
    migrate.await.expect("migrations run again");
    assert_eq!(store.load(&r.id).await.expect("load"), Some(r.clone()));
    let mut next = r.clone();
    next.version += 1;
    assert_eq!(
        store.save(&next, r.version).await.expect("save"),
        session_core::Saved::Saved
    );
}

#[tokio::test]
async fn forgotten_migrations_run_again() {
    let store = support::sqlite_memory().await;
    sqlx::query("DELETE FROM sessions_migrations")
        .execute(store.pool())
        .await
        .expect("forget");
    migrations_run_again_over_their_own_tables(&store, store.migrate()).await;
    if let Some(pg) = support::postgres().await {
        let pg = pg.inner();
        let schema = pg.table().schema().expect("a schema of its own");
        sqlx::query(&format!("DELETE FROM \"{schema}\".\"sessions_migrations\""))
            .execute(pg.pool())
            .await
            .expect("forget on postgres");
        migrations_run_again_over_their_own_tables(pg, pg.migrate()).await;
    }
    if let Some(my) = support::mysql().await {
        let my = my.inner();
        let name = my.table().name();
        sqlx::query(&format!("DELETE FROM `{name}_migrations`"))
            .execute(my.pool())
            .await
            .expect("forget on mysql");
        migrations_run_again_over_their_own_tables(my, my.migrate()).await;
    }
}

#[tokio::test]
async fn an_undecodable_row_is_no_session() {
    let store = support::sqlite_memory().await;
    let r = record(Duration::from_secs(3600));
    store.create(&r).await.expect("create");
    sqlx::query("UPDATE sessions SET data = ? WHERE id = ?")
        .bind(&b"\xc1 not a record"[..])
        .bind(&r.id.as_bytes()[..])
        .execute(store.pool())
        .await
        .expect("corrupt it");
    assert_eq!(store.load(&r.id).await.expect("load"), None);
}

/// A column of the wrong type (SQLite keeps whatever it is given) is a
/// corrupted row too: no session, not an error on every request.
#[tokio::test]
async fn a_row_with_a_mistyped_column_is_no_session() {
    let store = support::sqlite_memory().await;
    let r = record(Duration::from_secs(3600));
    store.create(&r).await.expect("create");
    sqlx::query("UPDATE sessions SET version = 'seven' WHERE id = ?")
        .bind(&r.id.as_bytes()[..])
        .execute(store.pool())
        .await
        .expect("corrupt it");
    assert_eq!(store.load(&r.id).await.expect("load"), None);
}

/// An owner's row whose id is of the wrong type (an edit by hand) is left
/// out of the owner's listing instead of failing it: the owner's other
/// sessions are still listed.
#[tokio::test]
async fn a_row_with_a_mistyped_id_is_left_out_of_its_owners_listing() {
    let store = support::sqlite_memory().await;
    let mut mistyped = record(Duration::from_secs(3600));
    mistyped.owner = Some("alice".into());
    let mut kept = record(Duration::from_secs(3600));
    kept.owner = Some("alice".into());
    for r in [&mistyped, &kept] {
        store.create(r).await.expect("create");
    }
    sqlx::query("UPDATE sessions SET id = 42 WHERE id = ?")
        .bind(&mistyped.id.as_bytes()[..])
        .execute(store.pool())
        .await
        .expect("corrupt it");
    assert_eq!(
        store.ids_of_owner("alice").await.expect("list"),
        vec![kept.id]
    );
}

/// A row whose `version` column disagrees with its record (an edit by hand, a
/// partial restore) could never be saved again: it is no session.
#[tokio::test]
async fn a_row_whose_version_disagrees_with_its_record_is_no_session() {
    let store = support::sqlite_memory().await;
    let r = record(Duration::from_secs(3600));
    store.create(&r).await.expect("create");
    assert!(store.load(&r.id).await.expect("load").is_some());
    sqlx::query("UPDATE sessions SET version = version + 1 WHERE id = ?")
        .bind(&r.id.as_bytes()[..])
        .execute(store.pool())
        .await
        .expect("move the column");
    assert_eq!(store.load(&r.id).await.expect("load"), None);
}

/// A row whose `owner` column disagrees with its record (an edit by hand) is
/// no session: the owner index is the column, so the session would answer
/// its cookie while its record's owner could not log it out everywhere.
async fn a_row_whose_owner_disagrees_is_no_session<S: Store>(
    store: &S,
    retag: impl AsyncFnOnce(&[u8]),
) {
    let mut r = record(Duration::from_secs(3600));
    r.owner = Some("alice".into());
    store.create(&r).await.expect("create");
    assert!(store.load(&r.id).await.expect("load").is_some());
    retag(&r.id.as_bytes()[..]).await;
    assert_eq!(store.load(&r.id).await.expect("load"), None);
}

#[tokio::test]
async fn sqlite_a_row_whose_owner_disagrees_with_its_record_is_no_session() {
    let store = support::sqlite_memory().await;
    a_row_whose_owner_disagrees_is_no_session(&store, async |id| {
        sqlx::query("UPDATE sessions SET owner = 'mallory' WHERE id = ?")
            .bind(id)
            .execute(store.pool())
            .await
            .expect("retag");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_row_whose_owner_disagrees_with_its_record_is_no_session() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let table = support::pg_table(store.inner());
    a_row_whose_owner_disagrees_is_no_session(&store, async |id| {
        sqlx::query(&format!(
            "UPDATE {table} SET owner = 'mallory' WHERE id = $1"
        ))
        .bind(id)
        .execute(store.inner().pool())
        .await
        .expect("retag");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_row_whose_owner_disagrees_with_its_record_is_no_session() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let table = store.inner().table().name().to_owned();
    a_row_whose_owner_disagrees_is_no_session(&store, async |id| {
        sqlx::query(&format!(
            "UPDATE `{table}` SET owner = 'mallory' WHERE id = ?"
        ))
        .bind(id)
        .execute(store.inner().pool())
        .await
        .expect("retag");
    })
    .await;
}

/// A save or a touch that waited for a connection (an in-memory database has
/// one) past its record's deadline finds the record expired, as every load
/// meanwhile did: it does not bring it back with a later deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_waited_for_a_connection_past_the_deadline_finds_the_session_ended() {
    let store = support::sqlite_memory().await;
    let r = record(Duration::from_millis(300));
    store.create(&r).await.expect("create");
    let mut next = r.clone();
    next.version += 1;
    next.expires_at = Timestamp::now() + Duration::from_secs(3600);
    let held = store.pool().acquire().await.expect("the only connection");
    let (saver, toucher) = (store.clone(), store.clone());
    let save = tokio::spawn({
        let next = next.clone();
        async move { saver.save(&next, 0).await }
    });
    let touch = tokio::spawn(async move { (toucher.touch(&r.id, 0, None, next.expires_at)).await });
    // Both are waiting for the connection when the deadline passes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!save.is_finished() && !touch.is_finished());
    drop(held);
    assert_eq!(
        save.await.expect("join").expect("save"),
        session_core::Saved::Missing
    );
    assert!(!touch.await.expect("join").expect("touch"));
    assert_eq!(store.load(&r.id).await.expect("load"), None);
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let started = Instant::now();
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test")
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("connect"), "{err}");
    let err = MySqlStore::connect("mysql://root@127.0.0.1:1/test")
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("connect"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(SqliteStore::connect("sqlite:/nonexistent-dir/x/y.db")
        .await
        .is_err());
}

fn manager(store: impl Store) -> Manager {
    manager_with_timeout(store, Duration::from_millis(500))
}

async fn eventually(m: &Manager, cookie: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match read(m, cookie).await {
            Ok(v) => {
                assert_eq!(v, want);
                return;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "did not recover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Stalled and cut connections through a proxy: bounded errors, then
/// recovery with the data intact.
async fn hang_and_loss(m: Manager, proxy: FaultProxy) {
    let cookie = stored(&m).await;
    proxy.stall();
    let started = Instant::now();
    let err = read(&m, &cookie)
        .await
        .expect_err("a stalled database must fail");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    proxy.restore();
    eventually(&m, &cookie, "iris").await;

    proxy.cut();
    let started = Instant::now();
    let err = read(&m, &cookie)
        .await
        .expect_err("a lost database must fail");
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Store { .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    proxy.restore();
    eventually(&m, &cookie, "iris").await;
}

fn upstream(url: &str, default_port: u16) -> std::net::SocketAddr {
    let after = url.split("://").nth(1).unwrap_or_default();
    let host = after.rsplit('@').next().unwrap_or_default();
    let host = host.split('/').next().unwrap_or_default();
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    use std::net::ToSocketAddrs;
    host.to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("address")
}

fn through(url: &str, proxy: &FaultProxy) -> String {
    let (scheme, rest) = url.split_once("://").expect("url");
    let (user, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let at = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("{scheme}://{at}{}/{path}", proxy.addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hangs_and_losses_are_bounded_and_recovered() {
    let url = support::postgres_url();
    if PostgresStore::connect(&url).await.is_err() {
        support::missing("PostgreSQL (DATABASE_URL_POSTGRES)", "no connection");
        return;
    }
    let proxy = FaultProxy::start(upstream(&url, 5432))
        .await
        .expect("proxy");
    let store = PostgresStore::connect(&through(&url, &proxy))
        .await
        .expect("via proxy");
    let store = support::postgres_in_schema(store, url)
        .await
        .expect("schema");
    hang_and_loss(manager(store), proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_writes_survive_cut_connections() {
    let url = support::postgres_url();
    if PostgresStore::connect(&url).await.is_err() {
        support::missing("PostgreSQL (DATABASE_URL_POSTGRES)", "no connection");
        return;
    }
    let proxy = FaultProxy::start(upstream(&url, 5432))
        .await
        .expect("proxy");
    let store = PostgresStore::connect(&through(&url, &proxy))
        .await
        .expect("via proxy");
    let store = support::postgres_in_schema(store, url)
        .await
        .expect("schema");
    acknowledged_writes_survive_cuts(&manager(store), &proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_hangs_and_losses_are_bounded_and_recovered() {
    let url = support::mysql_url();
    if MySqlStore::connect(&url).await.is_err() {
        support::missing("MariaDB/MySQL (DATABASE_URL_MYSQL)", "no connection");
        return;
    }
    let proxy = FaultProxy::start(upstream(&url, 3306))
        .await
        .expect("proxy");
    let store = MySqlStore::connect(&through(&url, &proxy))
        .await
        .expect("via proxy");
    let store = support::mysql_in_table(store, url).await.expect("table");
    hang_and_loss(manager(store), proxy).await;
}
