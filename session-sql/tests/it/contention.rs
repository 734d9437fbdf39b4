//! Contention with other transactions on the session table: a request's
//! statement that the database picks as a deadlock's victim runs again
//! instead of failing the request, and a migration never runs beside
//! another instance's because its wait for the lock was cut short.

use std::future::Future;
use std::time::{Duration, Instant};

use session_core::{Record, Saved, Store};
use sqlx::{Connection, Executor};

use crate::support::{self, record};

const HOUR: Duration = Duration::from_secs(3600);

/// Polls `waiting` until it answers a positive count: the statement under
/// test is waiting for a lock.
async fn until_waiting<F, Fut>(what: &str, mut waiting: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = sqlx::Result<i64>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting().await.expect("count lock waits") == 0 {
        assert!(Instant::now() < deadline, "{what} never waited for a lock");
        // MariaDB refreshes `INNODB_TRX` only when it was last read more than
        // 0.1 s ago: polling faster would keep showing the first snapshot.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// [`until_waiting`] for a statement on `table` of a PostgreSQL store.
async fn until_waiting_on_postgres(what: &str, store: &session_sql::PostgresStore, table: &str) {
    let waits = format!(
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' AND query LIKE '%{}%'",
        table.replace('\'', "''")
    );
    until_waiting(what, || sqlx::query_scalar(&waits).fetch_one(store.pool())).await;
}

/// `fut`, or a panic after 30 s.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// `r`'s next version, its deadline `by` later: what the save under test
/// writes.
fn extended(r: &Record, by: Duration) -> Record {
    let mut next = r.clone();
    next.version += 1;
    next.expires_at = r.expires_at + by;
    next
}

/// `r`'s row locked by a transaction of its own (`SELECT ... FOR UPDATE`),
/// and the store's table as a quoted name.
async fn locked_row(
    store: &session_sql::PostgresStore,
    r: &Record,
) -> (String, sqlx::Transaction<'static, sqlx::Postgres>) {
    let table = support::pg_table(store);
    let mut holder = store.pool().begin().await.expect("begin");
    sqlx::query(&format!("SELECT id FROM {table} WHERE id = $1 FOR UPDATE"))
        .bind(&r.id.as_bytes()[..])
        .fetch_all(&mut *holder)
        .await
        .expect("lock the row");
    (table, holder)
}

/// The save under test, on a task of its own: it waits for a lock.
fn save_in_background<S: Store + Clone + 'static>(
    store: &S,
    next: &Record,
    version: u64,
) -> tokio::task::JoinHandle<Result<Saved, session_core::StoreError>> {
    let (store, next) = (store.clone(), next.clone());
    tokio::spawn(async move { store.save(&next, version).await })
}

/// The save under test, picked as the victim, ran again and left `saved`:
/// its version and deadline.
async fn ran_again(
    saving: tokio::task::JoinHandle<Result<Saved, session_core::StoreError>>,
    store: &impl Store,
    saved: &Record,
) {
    let outcome = bounded("the save", saving).await.expect("join");
    assert_eq!(outcome.expect("the save, run again"), Saved::Saved);
    let now = store.load(&saved.id).await.expect("load").expect("live");
    assert_eq!(now.version, saved.version);
    assert_eq!(now.expires_at, saved.expires_at);
}

/// On MariaDB/MySQL: another transaction holds the gap of the deadline index
/// where a save's new deadline goes, the save waits for it while holding the
/// session's row, then that transaction asks for the row. InnoDB breaks the
/// cycle by rolling back the transaction that changed fewer rows, the save's
/// one-row statement: the store runs it again, behind the winner, and the
/// request never sees the deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_save_picked_as_a_deadlock_victim_runs_again() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let store = store.inner().clone();
    let table = format!("`{}`", store.table().name());
    let r = record(HOUR);
    store.create(&r).await.expect("create");
    let next = extended(&r, 2 * HOUR);

    // A connection of its own, in the isolation level whose gap locks the
    // cycle needs (InnoDB's default).
    let mut own = sqlx::MySqlConnection::connect(&support::mysql_url())
        .await
        .expect("connect");
    own.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .expect("isolation");
    let mut other = own.begin().await.expect("begin");
    // Weight: InnoDB rolls back the lighter of the two.
    for _ in 0..20 {
        let filler = record(100 * 24 * HOUR);
        sqlx::query(&format!(
            "INSERT INTO {table} (id, data, version, expires_at) VALUES (?, x'00', 0, ?)"
        ))
        .bind(&filler.id.as_bytes()[..])
        .bind(filler.expires_at.unix_millis())
        .execute(&mut *other)
        .await
        .expect("filler");
    }
    let around = next.expires_at.unix_millis();
    sqlx::query(&format!(
        "SELECT id FROM {table} WHERE expires_at BETWEEN ? AND ? FOR UPDATE"
    ))
    .bind(around - 60_000)
    .bind(around + 60_000)
    .fetch_all(&mut *other)
    .await
    .expect("lock the gap");

    let saving = save_in_background(&store, &next, r.version);
    let waits = format!(
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
         WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE '%{}%'",
        store.table().name()
    );
    until_waiting("the save", || {
        sqlx::query_scalar(&waits).fetch_one(store.pool())
    })
    .await;
    // The cycle: this can only be granted once the save's statement has
    // given the row back, which it cannot do by finishing while the gap is
    // held here.
    bounded(
        "the row lock",
        sqlx::query(&format!("SELECT id FROM {table} WHERE id = ? FOR UPDATE"))
            .bind(&r.id.as_bytes()[..])
            .fetch_all(&mut *other),
    )
    .await
    .expect("this transaction, the heavier, survives the deadlock");
    other.commit().await.expect("commit");

    ran_again(saving, &store, &next).await;
}

/// On PostgreSQL: another transaction holds the session's row, the save
/// waits for it while holding the table's row-exclusive lock, then that
/// transaction asks for a share lock on the table. The save waited first,
/// so its deadlock check runs first and rolls its statement back: the store
/// runs it again once the other transaction commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_save_picked_as_a_deadlock_victim_runs_again() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let store = store.inner().clone();
    let r = record(HOUR);
    store.create(&r).await.expect("create");
    let next = extended(&r, HOUR);

    let (table, mut other) = locked_row(&store, &r).await;

    let saving = save_in_background(&store, &next, r.version);
    until_waiting_on_postgres("the save", &store, &table).await;
    // Each side checks for a deadlock `deadlock_timeout` (1 s) after it
    // began to wait, and the first to check is rolled back: the save must
    // have waited well before this transaction does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Granted only once the save's statement has ended, which it cannot do
    // by finishing while the row is held here.
    bounded(
        "the table lock",
        other.execute(format!("LOCK TABLE {table} IN SHARE MODE").as_str()),
    )
    .await
    .expect("this transaction, which waited last, survives the deadlock");
    other.commit().await.expect("commit");

    ran_again(saving, &store, &next).await;
}

/// `delete_all` while another transaction deletes rows of its first batch:
/// PostgreSQL passes over the rows that transaction deleted once it commits,
/// so the batch deletes fewer rows than a batch, with others left. The call
/// goes on until a batch finds nothing: every session is gone (a short batch
/// taken for the end of the table left hundreds, after "log everyone out").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delete_all_goes_on_past_rows_another_transaction_deleted() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let store = store.inner().clone();
    let table = support::pg_table(&store);
    let batch = session_sql::SWEEP_BATCH;
    // More rows than a batch, and so many deleted by the other transaction
    // that any batch's pick holds some of them.
    let (rows, taken) = (batch * 3 / 2, batch * 3 / 5);
    for _ in 0..rows {
        store.create(&record(HOUR)).await.expect("create");
    }
    let mut other = store.pool().begin().await.expect("begin");
    let deleted = sqlx::query(&format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} LIMIT $1)"
    ))
    .bind(taken)
    .execute(&mut *other)
    .await
    .expect("delete some")
    .rows_affected();
    assert_eq!(deleted.cast_signed(), taken);

    let deleting = tokio::spawn({
        let store = store.clone();
        async move { store.delete_all().await }
    });
    until_waiting_on_postgres("delete_all", &store, &table).await;
    other.commit().await.expect("commit");

    let all = bounded("delete_all", deleting).await.expect("join");
    assert_eq!(all.expect("delete_all").cast_signed(), rows - taken);
    let left: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(left, 0, "sessions left behind by delete_all");
}

/// A statement that the store timeout abandons while it waits for a row
/// lock gives its place in the pool back at once. Returned to the pool, its
/// connection would first be pinged behind the statement, keeping the place
/// for as long as the row stays locked, and calls for every other session
/// would find no connection.
#[tokio::test]
async fn postgres_an_abandoned_statement_gives_its_place_in_the_pool_back() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let store = store.inner();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&support::postgres_url())
        .await
        .expect("a pool of two");
    let small = session_sql::PostgresStore::from_pool(pool).with_table(store.table().clone());
    let (r, other_session) = (record(HOUR), record(HOUR));
    small.create(&r).await.expect("create");
    small.create(&other_session).await.expect("create");
    let (_, holder) = locked_row(store, &r).await;
    for _ in 0..2 {
        let touch = small.touch(&r.id, r.version, None, r.expires_at + HOUR);
        let abandoned = tokio::time::timeout(Duration::from_millis(500), touch).await;
        assert!(abandoned.is_err(), "the touch waited for the row");
    }
    let loaded = bounded("a load of another session", small.load(&other_session.id)).await;
    // Released before the verdict, so that a failure does not leave the
    // table locked for the cleanup.
    holder.rollback().await.expect("rollback");
    assert!(
        matches!(loaded, Ok(Some(_))),
        "the pool had no place: {loaded:?}"
    );
}

/// An abandoned statement leaves an in-memory SQLite database as it was.
/// sqlx closes the pool's connection after it, and the database lives only
/// while a connection is open: the store keeps one outside the pool, or
/// every session, and the table, would be gone.
#[tokio::test]
async fn sqlite_memory_keeps_its_sessions_after_an_abandoned_statement() {
    use std::task::{Context, Waker};
    let store = support::sqlite_memory().await;
    let r = record(HOUR);
    store.create(&r).await.expect("create");
    let mut abandoned = false;
    // SQLite's thread, on the other core, often answers before the poll
    // looks for the answer (a CI run once saw it do so 100 times in a row):
    // enough tries that one is caught under way.
    for _ in 0..5_000 {
        // The connection back in the pool, so that the poll below takes it
        // and hands the statement to SQLite's thread.
        while store.pool().num_idle() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut load = std::pin::pin!(store.load(&r.id));
        // Polled once: the statement is with SQLite's thread, unless it
        // answered at once (then nothing was abandoned: again).
        if load
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            abandoned = true;
            break;
        }
    }
    assert!(abandoned, "every load answered on its first poll");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let found = bounded("a load", store.load(&r.id)).await;
    assert!(
        matches!(found, Ok(Some(_))),
        "the database is gone: {found:?}"
    );
}

/// Makes the next `failures` updates of the store's table fail with MySQL
/// error `errno`, through a trigger whose count lives in a table that a
/// statement's rollback does not undo (`ENGINE=MEMORY`); answers the
/// counter's name, which also counts the updates the trigger saw. `None`
/// (a loud skip, a failure in CI) where the server refuses the trigger, as
/// MySQL with binary logging does for a user without `SUPER`.
async fn fail_updates(
    store: &session_sql::MySqlStore,
    errno: u16,
    failures: u32,
) -> Option<String> {
    let table = store.table().name();
    let faults = format!("{table}_faults");
    let pool = store.pool();
    sqlx::raw_sql(&format!(
        "CREATE TABLE `{faults}` (failures INT, seen INT) ENGINE=MEMORY; \
         INSERT INTO `{faults}` VALUES ({failures}, 0)"
    ))
    .execute(pool)
    .await
    .expect("the counter");
    let trigger = sqlx::raw_sql(&format!(
        "CREATE TRIGGER `{table}_fault` BEFORE UPDATE ON `{table}` FOR EACH ROW \
         BEGIN \
           UPDATE `{faults}` SET seen = seen + 1; \
           IF (SELECT failures FROM `{faults}`) > 0 THEN \
             UPDATE `{faults}` SET failures = failures - 1; \
             SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = {errno}, \
               MESSAGE_TEXT = 'injected by the test'; \
           END IF; \
         END"
    ))
    .execute(pool)
    .await;
    if let Err(e) = trigger {
        sqlx::raw_sql(&format!("DROP TABLE `{faults}`"))
            .execute(pool)
            .await
            .expect("drop the counter");
        support::missing("a trigger on the session table", &e.to_string());
        return None;
    }
    Some(faults)
}

/// The updates the trigger of [`fail_updates`] saw; drops the trigger and
/// its counter.
async fn updates_seen(store: &session_sql::MySqlStore, faults: &str) -> i32 {
    let pool = store.pool();
    let seen = sqlx::query_scalar(&format!("SELECT seen FROM `{faults}`"))
        .fetch_one(pool)
        .await
        .expect("count");
    let table = store.table().name();
    sqlx::raw_sql(&format!(
        "DROP TRIGGER `{table}_fault`; DROP TABLE `{faults}`"
    ))
    .execute(pool)
    .await
    .expect("drop the counter");
    seen
}

/// MariaDB from 11.6.2 runs InnoDB under `innodb_snapshot_isolation`, where
/// a statement that waited for a row another transaction changed and
/// committed is rolled back with error 1020 ("Record has changed since last
/// read"), as a deadlock's victim is. (MariaDB 10.11 does not raise it for
/// these one-row statements, so a trigger raises it here.) The save runs
/// again and lands; one that keeps meeting it gives up after its attempts
/// with an error that says the database is busy, not that it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_save_rolled_back_for_a_changed_record_runs_again() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let store = store.inner().clone();
    let r = record(HOUR);
    store.create(&r).await.expect("create");
    let next = extended(&r, HOUR);
    let Some(faults) = fail_updates(&store, 1020, 1).await else {
        return;
    };
    let saved = store.save(&next, r.version).await;
    assert_eq!(updates_seen(&store, &faults).await, 2);
    assert_eq!(saved.expect("the save, run again"), Saved::Saved);

    let faults = fail_updates(&store, 1020, u32::MAX >> 1)
        .await
        .expect("trigger");
    let failed = store.save(&extended(&next, HOUR), next.version).await;
    assert_eq!(updates_seen(&store, &faults).await, 3);
    let error = failed.expect_err("every attempt rolled back");
    assert_eq!(error.kind(), session_core::StoreErrorKind::Unavailable);

    // MariaDB's "Connection was killed" (a failover tool, `KILL
    // CONNECTION`) is for now too, and not run again.
    let faults = fail_updates(&store, 1927, 1).await.expect("trigger");
    let killed = store.save(&extended(&next, HOUR), next.version).await;
    assert_eq!(updates_seen(&store, &faults).await, 1);
    let error = killed.expect_err("the connection was killed");
    assert_eq!(error.kind(), session_core::StoreErrorKind::Unavailable);
    let stored = store.load(&r.id).await.expect("load").expect("live");
    assert_eq!(stored.version, next.version);
}

/// On MariaDB/MySQL a migration that waits for another instance's lock and
/// is cut short (here by MariaDB's `max_statement_time`; MySQL's
/// `max_execution_time` and a `KILL QUERY` alike) fails instead of migrating
/// beside that instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_migration_whose_wait_for_the_lock_is_cut_short_fails() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let name = store.inner().table().name().to_owned();
    let holder = store.inner().pool().clone();
    let mut held = hold_mysql_migration_lock().await;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&holder)
        .await
        .expect("version");
    // MariaDB's statement timeout in seconds, MySQL's in milliseconds.
    let limit = if version.contains("MariaDB") {
        "SET SESSION max_statement_time = 0.3"
    } else {
        "SET SESSION max_execution_time = 300"
    };

    let impatient = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(limit).await?;
                Ok(())
            })
        })
        .connect(&support::mysql_url())
        .await
        .expect("connect");
    // A table nobody has migrated, so that `migrate` needs the lock.
    let fresh = session_sql::Table::new(&format!("{name}_2")).expect("name");
    let second = session_sql::MySqlStore::from_pool(impatient.clone()).with_table(fresh);
    let result = bounded("migrate", second.migrate()).await;
    let created: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(format!("{name}_2"))
    .fetch_one(&holder)
    .await
    .expect("look");
    sqlx::query(&format!(
        "DROP TABLE IF EXISTS `{name}_2`, `{name}_2_migrations`"
    ))
    .execute(&holder)
    .await
    .expect("drop");
    sqlx::query(&format!("SELECT RELEASE_LOCK({MYSQL_LOCK})"))
        .execute(&mut held)
        .await
        .expect("release");
    let why = refused_for_the_lock(result);
    assert!(why.contains("KILL QUERY"), "{why}");
    assert_eq!(created, 0, "the table was created without the lock");
}

/// The reason of a `migrate` that failed before its first migration, as it
/// must when it could not take the lock.
fn refused_for_the_lock(result: Result<(), session_sql::SqlStoreError>) -> String {
    let error = result.expect_err("migrated without the lock");
    assert!(
        matches!(
            error,
            session_sql::SqlStoreError::Migrate { version: 0, .. }
        ),
        "{error:?}"
    );
    std::error::Error::source(&error)
        .expect("a source")
        .to_string()
}

/// The name of the MariaDB/MySQL migration lock of the connection's
/// database, as `migrate` takes it.
const MYSQL_LOCK: &str = "CONCAT('session-sql migrate', ' ', SHA1(COALESCE(DATABASE(), '')))";

/// Takes the MariaDB/MySQL migration lock on a connection of its own, not a
/// pooled one: if the test fails, closing it releases the lock that every
/// other test's `migrate` takes.
async fn hold_mysql_migration_lock() -> sqlx::MySqlConnection {
    let mut held = sqlx::MySqlConnection::connect(&support::mysql_url())
        .await
        .expect("connect");
    let taken: Option<i64> = sqlx::query_scalar(&format!("SELECT GET_LOCK({MYSQL_LOCK}, 60)"))
        .fetch_one(&mut held)
        .await
        .expect("take the lock");
    assert_eq!(taken, Some(1));
    held
}

/// The error `migrate` answers when another instance's lock outlasts the
/// store's migration wait: a migration error that says so, within seconds
/// of a one-second wait.
async fn migrate_gives_up_after_its_wait(
    migrate: impl Future<Output = Result<(), session_sql::SqlStoreError>>,
) {
    let started = Instant::now();
    let why = refused_for_the_lock(bounded("migrate", migrate).await);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(why.contains("held the migration lock"), "{why}");
    assert!(why.contains("1s"), "{why}");
}

/// On PostgreSQL `migrate` waits for another instance's advisory lock no
/// longer than the store's migration wait, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_migration_waits_for_the_lock_no_longer_than_told() {
    let Some(store) = support::postgres().await else {
        return;
    };
    // Not a pooled connection: if this test fails, closing it releases the
    // lock that every other test's `migrate` takes.
    let mut held = sqlx::PgConnection::connect(&support::postgres_url())
        .await
        .expect("connect");
    let mut holding = held.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('session-sql migrate'))")
        .execute(&mut *holding)
        .await
        .expect("take the lock");
    let schema = support::unique("test_");
    let fresh = session_sql::Table::new("sessions")
        .expect("name")
        .with_schema(&schema)
        .expect("schema");
    let second = session_sql::PostgresStore::from_pool(store.inner().pool().clone())
        .with_table(fresh)
        .with_migration_wait(Duration::from_secs(1));
    let migrated = second.migrate();
    migrate_gives_up_after_its_wait(migrated).await;
    holding.rollback().await.expect("release");
    let created: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(&schema)
    .fetch_one(store.inner().pool())
    .await
    .expect("look");
    assert_eq!(created, 0, "the schema was created without the lock");
}

/// The same on MariaDB/MySQL, whose `GET_LOCK` takes the wait in seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_migration_waits_for_the_lock_no_longer_than_told() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let name = store.inner().table().name().to_owned();
    let mut held = hold_mysql_migration_lock().await;
    let fresh = session_sql::Table::new(&format!("{name}_w")).expect("name");
    let second = session_sql::MySqlStore::from_pool(store.inner().pool().clone())
        .with_table(fresh)
        .with_migration_wait(Duration::from_secs(1));
    migrate_gives_up_after_its_wait(second.migrate()).await;
    sqlx::query(&format!("SELECT RELEASE_LOCK({MYSQL_LOCK})"))
        .execute(&mut held)
        .await
        .expect("release");
    let created: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(format!("{name}_w"))
    .fetch_one(store.inner().pool())
    .await
    .expect("look");
    assert_eq!(created, 0, "the table was created without the lock");
}

/// On MariaDB/MySQL a migration whose DDL waits for the table's metadata
/// lock (a transaction that read the table and is still open: a backup, a
/// report) gives up after the store's migration wait instead of the
/// server's year, and holds the migration lock of its own database only:
/// an app migrating a table in another database of the server meanwhile
/// does not wait for it (`GET_LOCK`'s names are the server's). Both tables
/// are in databases of their own, whose locks no other test takes (so the
/// test needs the right to create databases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_migration_blocked_by_a_reader_gives_up_and_holds_only_its_databases_lock() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let pool = store.inner().pool().clone();
    let databases = Databases::new(2);
    let in_own_database = |database: &str, wait: u64| {
        let table = session_sql::Table::new("sessions")
            .expect("name")
            .with_schema(database)
            .expect("schema");
        session_sql::MySqlStore::from_pool(pool.clone())
            .with_table(table)
            .with_migration_wait(Duration::from_secs(wait))
    };
    let (a, b) = (&databases.0[0], &databases.0[1]);
    let blocked = in_own_database(a, 2);
    blocked.migrate().await.expect("migrate");
    // Migration 2 is to run again (it can: it sets the column's type).
    sqlx::query(&format!(
        "DELETE FROM `{a}`.`sessions_migrations` WHERE version = 2"
    ))
    .execute(&pool)
    .await
    .expect("forget migration 2");
    let mut reader = sqlx::MySqlConnection::connect(&support::mysql_url())
        .await
        .expect("connect");
    let mut reading = reader.begin().await.expect("begin");
    sqlx::query(&format!("SELECT COUNT(*) FROM `{a}`.`sessions`"))
        .execute(&mut *reading)
        .await
        .expect("read the table");

    let started = Instant::now();
    let migrating = blocked.clone();
    let blocked_migration = tokio::spawn(async move { migrating.migrate().await });
    until_waiting("the migration's ALTER", || {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE STATE LIKE 'Waiting for table metadata lock%' AND INFO LIKE ?",
        )
        .bind(format!("ALTER TABLE `{a}`.`sessions`%"))
        .fetch_one(&pool)
    })
    .await;
    // Meanwhile, a table in another database migrates at once.
    let other_migrated = bounded(
        "the other database's migrate",
        in_own_database(b, 1).migrate(),
    )
    .await;
    let gave_up = bounded("the blocked migrate", blocked_migration)
        .await
        .expect("join");
    let waited = started.elapsed();
    reading.rollback().await.expect("end the read");
    other_migrated.expect("another database's migration waited for this one's lock");
    let error = gave_up.expect_err("the ALTER ran beside an open reader");
    assert!(
        matches!(
            error,
            session_sql::SqlStoreError::Migrate { version: 2, .. }
        ),
        "{error:?}"
    );
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // Once the reader is gone, migrating again finishes the job.
    blocked.migrate().await.expect("migrate after the reader");
}

/// MySQL databases of a test's own, dropped when it ends, failed or not.
struct Databases(Vec<String>);

impl Databases {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| support::unique("session_sql_db_")).collect())
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        support::block_on_thread(move || async move {
            if let Ok(mut conn) = sqlx::MySqlConnection::connect(&support::mysql_url()).await {
                for name in names {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                        .execute(&mut conn)
                        .await;
                }
            }
        });
    }
}

/// On MariaDB/MySQL each connection waits at most 5 s for a row lock (the
/// manager's default store timeout), not the server's 50 s: the server does
/// not notice that the store closed the connection of a statement it gave
/// up on, so the statement would wait on and write when the lock went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_connections_wait_for_a_row_lock_no_longer_than_the_store_timeout() {
    let Some(store) = support::mysql().await else {
        return;
    };
    let wait: u64 = sqlx::query_scalar("SELECT @@SESSION.innodb_lock_wait_timeout")
        .fetch_one(store.inner().pool())
        .await
        .expect("read the setting");
    assert_eq!(wait, 5);
}

/// On PostgreSQL a statement the store gave up on while it waited for a row
/// lock ends within about a second of its connection's closing
/// (`client_connection_check_interval`), instead of waiting on, one server
/// process each, and writing once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_abandoned_statement_ends_on_the_server_too() {
    let Some(store) = support::postgres().await else {
        return;
    };
    let interval: Option<String> =
        sqlx::query_scalar("SELECT current_setting('client_connection_check_interval', true)")
            .fetch_one(store.inner().pool())
            .await
            .expect("read the setting");
    if matches!(interval.as_deref(), None | Some("0")) {
        support::missing(
            "client_connection_check_interval (PostgreSQL 14 or later, on Linux)",
            &format!("the server has {interval:?}"),
        );
        return;
    }
    let r = record(HOUR);
    store.create(&r).await.expect("create");
    let (table, holder) = locked_row(store.inner(), &r).await;
    for _ in 0..3 {
        let touch = store.touch(&r.id, r.version, None, r.expires_at + HOUR);
        let abandoned = tokio::time::timeout(Duration::from_millis(300), touch).await;
        assert!(abandoned.is_err(), "the touch went through a locked row");
    }
    let waiting = || {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE $1",
        )
        .bind(format!("UPDATE {table}%"))
        .fetch_one(store.inner().pool())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = waiting().await.expect("count");
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        left = waiting().await.expect("count");
    }
    holder.rollback().await.expect("release the row");
    assert_eq!(left, 0, "abandoned statements still waited on the server");
    let stored = store.load(&r.id).await.expect("load").expect("live");
    assert_eq!(stored.expires_at, r.expires_at, "an abandoned touch landed");
}
