//! The store, written once for every database: each backend's module
//! instantiates it with its pool type and dialect.

/// Runs one statement on a [`Held`](crate::Held) connection from `$pool`,
/// inside a function returning `sqlx::Result`: `$conn` names the connection
/// in `$statement`, whose future the statement's answer comes from. The
/// connection goes back to the pool once the statement answered, and is
/// closed if it is dropped before.
macro_rules! on_held {
    ($pool:expr, |$conn:ident| $statement:expr) => {{
        let mut held = $crate::Held::acquire($pool).await?;
        let $conn = held.conn();
        let answer = $statement.await;
        held.answered(answer)
    }};
}

/// Defines a store type over one sqlx database.
macro_rules! sql_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $dialect:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            pool: sqlx::Pool<$db>,
            table: $crate::Table,
            queries: std::sync::Arc<$crate::Queries>,
            migration_wait: std::time::Duration,
            /// A connection kept outside the pool for as long as the store
            /// lives, where the database lives only while one is open (an
            /// in-memory SQLite database): sqlx closes a pooled connection
            /// whose statement was abandoned, and the database would go
            /// with it.
            #[allow(dead_code)]
            keeper: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("table", &self.table)
                    .field("connections", &self.pool.size())
                    .finish()
            }
        }

        impl $name {
            /// A store over an existing pool, using the default table
            /// (`sessions`).
            pub fn from_pool(pool: sqlx::Pool<$db>) -> Self {
                let table = $crate::Table::default();
                let queries = std::sync::Arc::new($crate::Queries::new(&$dialect, &table));
                Self {
                    pool,
                    table,
                    queries,
                    migration_wait: $crate::MIGRATION_WAIT,
                    keeper: None,
                }
            }

            /// How long [`migrate`](Self::migrate) waits for the database
            /// lock that another instance's migration holds before it fails
            /// ([`MIGRATION_WAIT`]($crate::MIGRATION_WAIT), ten minutes, by
            /// default; whole seconds on MySQL/MariaDB, at least one). It also
            /// bounds the wait of each migration statement for the table's own
            /// locks (a long transaction on the table, say).
            pub fn with_migration_wait(mut self, wait: std::time::Duration) -> Self {
                self.migration_wait = wait;
                self
            }

            /// Uses another table (and schema; see [`Table::with_schema`]($crate::Table::with_schema)).
            pub fn with_table(mut self, table: $crate::Table) -> Self {
                self.queries = std::sync::Arc::new($crate::Queries::new(&$dialect, &table));
                self.table = table;
                self
            }

            /// The table.
            pub fn table(&self) -> &$crate::Table {
                &self.table
            }

            /// The connection pool.
            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            /// Deletes the rows whose deadline is at or before `until()` (read
            /// for each batch), in batches of [`SWEEP_BATCH`]($crate::SWEEP_BATCH),
            /// letting requests run between them, and returns how many. A
            /// batch that picked fewer rows than a batch ends it (on
            /// PostgreSQL it may delete fewer than it picked: see
            /// `Dialect::sweep_counts_pick`).
            async fn sweep_until(
                &self,
                op: &'static str,
                until: impl Fn() -> i64,
            ) -> Result<u64, session_core::StoreError> {
                let mut total = 0;
                loop {
                    let until = until();
                    let (picked, n) = $crate::retrying(op, || async move {
                        on_held!(&self.pool, |conn| async {
                            let sweep = sqlx::query(&self.queries.sweep)
                                .bind(until)
                                .bind($crate::SWEEP_BATCH);
                            if self.queries.sweep_counts_pick {
                                let row = sweep.fetch_one(conn).await?;
                                let count = |i| {
                                    sqlx::Row::try_get::<i64, _>(&row, i)
                                        .map(|n| u64::try_from(n).unwrap_or(0))
                                };
                                Ok((count(0)?, count(1)?))
                            } else {
                                let done = sweep.execute(conn).await?;
                                Ok((done.rows_affected(), done.rows_affected()))
                            }
                        })
                    })
                    .await
                    .map_err($crate::query_error(op))?;
                    total += n;
                    if picked < $crate::SWEEP_BATCH.unsigned_abs() {
                        return Ok(total);
                    }
                    // Let requests run between batches.
                    tokio::task::yield_now().await;
                }
            }

            /// Creates the table and its indexes, applying the migrations
            /// shipped with this crate that the database has not seen yet.
            /// Safe to run from several instances at once: they take turns
            /// under one database lock, on PostgreSQL an advisory lock held by
            /// the transaction the migrations run in (released however it
            /// ends), on MySQL/MariaDB `GET_LOCK` under a name of the table's
            /// database (where the server refuses it, as Galera does, the
            /// migrations run without it; a wait for it that a statement
            /// timeout or a `KILL QUERY` interrupts is an error, since another
            /// instance is migrating then). The wait for the lock is bounded
            /// by [`with_migration_wait`](Self::with_migration_wait) (ten
            /// minutes by default): past it, `migrate` fails and says that
            /// another instance holds the lock. So is each migration
            /// statement's wait for the table's own locks (a long transaction
            /// that read the table, say, which every session statement would
            /// otherwise queue behind).
            ///
            /// A database that has every migration already is only read
            /// (`SELECT version FROM <table>_migrations`), with no lock and no
            /// DDL: an app whose role may read and write the tables but not
            /// create anything can call `migrate` at every start, once a role
            /// with those rights has run it.
            ///
            /// # Errors
            /// [`SqlStoreError::Migrate`]($crate::SqlStoreError::Migrate)
            /// naming the migration that failed.
            pub async fn migrate(&self) -> Result<(), $crate::SqlStoreError> {
                let q = &self.queries;
                let fail = |version| move |source| $crate::SqlStoreError::Migrate { version, source };
                let mut check = self.pool.acquire().await.map_err(fail(0))?;
                if self.applied(&mut *check).await.is_ok_and(|applied| {
                    q.migrations.iter().all(|(version, _)| applied.contains(version))
                }) {
                    return Ok(());
                }
                // Not with that connection where others migrate concurrently
                // (there is a lock): a lookup that failed may have left its
                // catalog cache sure that the schema or table is missing
                // while another instance creates it, and PostgreSQL would
                // then not see that instance's `CREATE SCHEMA` once it
                // commits. (SQLite keeps it: an in-memory database lives in
                // its one connection.)
                if matches!(q.migration_lock, $crate::MigrationLock::None) {
                    drop(check);
                } else {
                    let _ = check.close().await;
                }
                // One connection holds the lock and runs every statement. Where
                // there is a lock, it is closed afterwards rather than pooled:
                // a `migrate` cancelled while holding the lock (or a rollback
                // not yet sent) then releases it at once. (Not on SQLite,
                // where closing an in-memory database's connection would
                // drop the database.)
                let mut conn = self.pool.acquire().await.map_err(fail(0))?;
                if !matches!(q.migration_lock, $crate::MigrationLock::None) {
                    conn.close_on_drop();
                }
                match &q.migration_lock {
                    $crate::MigrationLock::None => self.migrate_locked(&mut conn).await,
                    $crate::MigrationLock::Transaction(lock) => {
                        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(fail(0))?;
                        // Before the first statement: under REPEATABLE READ or
                        // SERIALIZABLE (a database's default, say) the
                        // snapshot taken before waiting for the lock would
                        // hide the migrations recorded meanwhile.
                        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .execute(&mut *tx)
                            .await
                            .map_err(fail(0))?;
                        // Milliseconds, whole: `SET` takes no bound parameter.
                        let wait_ms = self.migration_wait.as_millis().clamp(1, i32::MAX as u128);
                        sqlx::query(&format!("SET LOCAL lock_timeout = {wait_ms}"))
                            .execute(&mut *tx)
                            .await
                            .map_err(fail(0))?;
                        let taken = sqlx::query(lock).bind(&q.lock_name).execute(&mut *tx).await;
                        if let Err(error) = taken {
                            return Err(fail(0)(if $crate::is_lock_timeout(&error) {
                                sqlx::Error::Protocol(format!(
                                    "another instance held the migration lock {:?} for {:?}",
                                    q.lock_name, self.migration_wait
                                ))
                            } else {
                                error
                            }));
                        }
                        match self.migrate_locked(&mut tx).await {
                            Ok(()) => tx.commit().await.map_err(fail(0)),
                            Err(e) => {
                                // The lock goes with the transaction.
                                let _ = tx.rollback().await;
                                Err(e)
                            }
                        }
                    }
                    $crate::MigrationLock::Session { lock, unlock } => {
                        let wait_s = self.migration_wait.as_secs().clamp(1, i32::MAX as u64) as i64;
                        // (MySQL, the one dialect with a session lock.) A
                        // migration's DDL waits for the table's metadata
                        // lock, behind any open transaction that read the
                        // table, for up to a year by default, and every
                        // session statement queues behind that wait: bound
                        // it by the migration wait, as PostgreSQL's
                        // `lock_timeout` does. The connection is closed
                        // afterwards, so the setting goes with it.
                        sqlx::query(&format!("SET SESSION lock_wait_timeout = {wait_s}"))
                            .execute(&mut *conn)
                            .await
                            .map_err(fail(0))?;
                        let taken: Result<Option<i64>, _> = sqlx::query_scalar(lock)
                            .bind(&q.lock_name)
                            .bind(wait_s)
                            .fetch_one(&mut *conn)
                            .await;
                        match taken {
                            Ok(Some(1)) => {}
                            Ok(Some(_)) => {
                                return Err(fail(0)(sqlx::Error::Protocol(format!(
                                    "another instance held the migration lock {:?} (followed by the \
                                     SHA-1 of the table's database) for {:?}",
                                    q.lock_name, self.migration_wait
                                ))))
                            }
                            // What `GET_LOCK` answers when a statement
                            // timeout or a `KILL QUERY` ends its wait.
                            Ok(None) => {
                                return Err(fail(0)(sqlx::Error::Protocol(format!(
                                    "the wait for the migration lock {:?}, which another instance \
                                     holds, was interrupted (a statement timeout or KILL QUERY)",
                                    q.lock_name
                                ))))
                            }
                            // Refused for good, as Galera refuses `GET_LOCK`.
                            Err(error) if $crate::refused(&error) => {
                                tracing::warn!(%error, "the database refused the migration lock; migrating without it");
                                return self.migrate_locked(&mut conn).await;
                            }
                            // Interrupted while another instance held it (a
                            // statement timeout, a killed query) or the
                            // connection failed: migrating now would run
                            // beside that instance's migration.
                            Err(error) => return Err(fail(0)(error)),
                        }
                        let result = self.migrate_locked(&mut conn).await;
                        let released: Result<Option<i64>, _> = sqlx::query_scalar(unlock)
                            .bind(&q.lock_name)
                            .fetch_one(&mut *conn)
                            .await;
                        if !matches!(released, Ok(Some(1))) {
                            // Closing the connection releases the lock.
                            drop(conn.detach());
                        }
                        result
                    }
                }
            }

            /// The migrations the database has recorded.
            async fn applied<'e, E>(&self, executor: E) -> Result<Vec<i64>, sqlx::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                use sqlx::Row as _;
                sqlx::query(&self.queries.applied)
                    .fetch_all(executor)
                    .await?
                    .iter()
                    .map(|row| row.try_get::<i64, _>(0))
                    .collect()
            }

            async fn migrate_locked(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
            ) -> Result<(), $crate::SqlStoreError> {
                let q = &self.queries;
                let fail = |version| move |source| $crate::SqlStoreError::Migrate { version, source };
                if let Some(schema) = &q.create_schema {
                    sqlx::query(schema).execute(&mut *conn).await.map_err(fail(0))?;
                }
                sqlx::query(&q.migrations_table)
                    .execute(&mut *conn)
                    .await
                    .map_err(fail(0))?;
                let applied = self.applied(&mut *conn).await.map_err(fail(0))?;
                for (version, statements) in &q.migrations {
                    if applied.contains(version) {
                        continue;
                    }
                    for statement in statements {
                        sqlx::query(statement)
                            .execute(&mut *conn)
                            .await
                            .map_err(fail(*version))?;
                    }
                    match sqlx::query(&q.record_migration)
                        .bind(*version)
                        .execute(&mut *conn)
                        .await
                    {
                        // Another instance recorded it first.
                        Err(e) if $crate::is_unique_violation(&e) => {}
                        other => {
                            other.map_err(fail(*version))?;
                        }
                    }
                    tracing::info!(version, table = %self.table.name(), "applied session table migration");
                }
                Ok(())
            }

            async fn insert(
                &self,
                record: &session_core::Record,
                data: &[u8],
            ) -> Result<sqlx::Result<<$db as sqlx::Database>::QueryResult>, session_core::StoreError> {
                let version = $crate::version(record.version)?;
                Ok($crate::retrying("create", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.insert)
                        .bind(&record.id.as_bytes()[..])
                        .bind(data)
                        .bind(version)
                        .bind(record.expires_at.unix_millis())
                        .bind(record.owner.as_deref())
                        .execute(conn))
                })
                .await)
            }
        }

        #[async_trait::async_trait]
        impl session_core::Store for $name {
            async fn load(
                &self,
                id: &session_core::RecordId,
            ) -> Result<Option<session_core::Record>, session_core::StoreError> {
                use sqlx::Row as _;
                let row = $crate::retrying("load", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.load)
                        .bind(&id.as_bytes()[..])
                        .bind($crate::now())
                        .fetch_optional(conn))
                })
                .await
                .map_err($crate::query_error("load"))?;
                let Some(row) = row else { return Ok(None) };
                // On SQLite a column of the wrong type (an edit by hand) is a
                // corrupted row: no session, like an undecodable record.
                // Elsewhere the schema fixes the types: the table is wrong.
                let columns = (|| {
                    // The owner as text, or as bytes where the column is
                    // binary (MySQL's `VARBINARY`).
                    let owner = if self.queries.binary_owner {
                        row.try_get::<Option<Vec<u8>>, _>(3)?
                    } else {
                        row.try_get::<Option<String>, _>(3)?.map(String::into_bytes)
                    };
                    Ok::<_, sqlx::Error>((
                        row.try_get::<Vec<u8>, _>(0)?,
                        row.try_get::<i64, _>(1)?,
                        row.try_get::<i64, _>(2)?,
                        owner,
                    ))
                })();
                match columns {
                    Ok((data, expires, version, owner)) => {
                        Ok($crate::decode(id, &data, expires, version, owner.as_deref()))
                    }
                    Err(e) if self.queries.dynamic_types => Ok($crate::corrupted(id, &e)),
                    Err(e) => Err($crate::query_error("load")(e)),
                }
            }

            async fn create(
                &self,
                record: &session_core::Record,
            ) -> Result<session_core::Created, session_core::StoreError> {
                let data = record
                    .to_bytes()
                    .map_err(|e| session_core::StoreError::new(session_core::StoreErrorKind::Other, e))?;
                match self.insert(record, &data).await? {
                    Ok(_) => return Ok(session_core::Created::Created),
                    Err(e) if $crate::is_unique_violation(&e) => {}
                    Err(e) => return Err($crate::query_error("create")(e)),
                }
                // The id exists: free it only if its row has expired, then
                // insert again, even when this freed nothing (a sweep may
                // have deleted the expired row first): only a live row is
                // `IdTaken`.
                $crate::retrying("create", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.delete_expired_id)
                        .bind(&record.id.as_bytes()[..])
                        .bind($crate::now())
                        .execute(conn))
                })
                .await
                .map_err($crate::query_error("create"))?;
                match self.insert(record, &data).await? {
                    Ok(_) => Ok(session_core::Created::Created),
                    Err(e) if $crate::is_unique_violation(&e) => Ok(session_core::Created::IdTaken),
                    Err(e) => Err($crate::query_error("create")(e)),
                }
            }

            async fn save(
                &self,
                record: &session_core::Record,
                expected_version: u64,
            ) -> Result<session_core::Saved, session_core::StoreError> {
                let data = record
                    .to_bytes()
                    .map_err(|e| session_core::StoreError::new(session_core::StoreErrorKind::Other, e))?;
                let (version, expected) =
                    ($crate::version(record.version)?, $crate::version(expected_version)?);
                let data = &data[..];
                let updated = $crate::retrying("save", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.save)
                        .bind(data)
                        .bind(version)
                        .bind(record.expires_at.unix_millis())
                        .bind(record.owner.as_deref())
                        .bind(&record.id.as_bytes()[..])
                        .bind(expected)
                        .bind($crate::now())
                        .execute(conn))
                })
                .await
                .map_err($crate::query_error("save"))?
                .rows_affected();
                if updated > 0 {
                    return Ok(session_core::Saved::Saved);
                }
                // Not saved: a conflict if the row is live, else missing.
                let live = $crate::retrying("save", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.live_version)
                        .bind(&record.id.as_bytes()[..])
                        .bind($crate::now())
                        .fetch_optional(conn))
                })
                .await
                .map_err($crate::query_error("save"))?;
                Ok(if live.is_some() {
                    session_core::Saved::Conflict
                } else {
                    session_core::Saved::Missing
                })
            }

            async fn touch(
                &self,
                id: &session_core::RecordId,
                version: u64,
                _owner: Option<&str>,
                expires_at: session_core::Timestamp,
            ) -> Result<bool, session_core::StoreError> {
                let version = $crate::version(version)?;
                let updated = $crate::retrying("touch", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.touch)
                        .bind(expires_at.unix_millis())
                        .bind(&id.as_bytes()[..])
                        .bind(version)
                        .bind($crate::now())
                        .execute(conn))
                })
                .await
                .map_err($crate::query_error("touch"))?
                .rows_affected();
                // Rows matched, on MySQL too: sqlx asks for `CLIENT_FOUND_ROWS`,
                // so the same deadline again counts.
                Ok(updated > 0)
            }

            async fn delete(&self, id: &session_core::RecordId) -> Result<(), session_core::StoreError> {
                $crate::retrying("delete", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.delete)
                        .bind(&id.as_bytes()[..])
                        .execute(conn))
                })
                .await
                .map_err($crate::query_error("delete"))?;
                Ok(())
            }

            async fn delete_expired(&self) -> Result<u64, session_core::StoreError> {
                self.sweep_until("delete expired", $crate::now).await
            }

            async fn delete_all(&self) -> Result<u64, session_core::StoreError> {
                // The sweep, for every deadline there is: the same batches,
                // so a large table is not locked as one statement would.
                self.sweep_until("delete all", || i64::MAX).await
            }

            async fn ids_of_owner(
                &self,
                owner: &str,
            ) -> Result<Vec<session_core::RecordId>, session_core::StoreError> {
                use sqlx::Row as _;
                if self.queries.cannot_own(owner) {
                    return Ok(Vec::new());
                }
                let rows = $crate::retrying("list owner", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.list_owner)
                        .bind(owner)
                        .bind($crate::now())
                        .fetch_all(conn))
                })
                .await
                .map_err($crate::query_error("list owner"))?;
                let mut ids = Vec::with_capacity(rows.len());
                for row in rows {
                    let bytes: Vec<u8> = match row.try_get(0) {
                        Ok(bytes) => bytes,
                        // On SQLite an id of the wrong type (an edit by hand)
                        // is a malformed id, as in `load`: skipped, so that it
                        // cannot keep the owner's sessions from being listed.
                        Err(e) if self.queries.dynamic_types => {
                            tracing::warn!(error = %e, "session row with a malformed id; skipped");
                            continue;
                        }
                        Err(e) => return Err($crate::query_error("list owner")(e)),
                    };
                    match <[u8; 32]>::try_from(bytes.as_slice()) {
                        Ok(b) => ids.push(session_core::RecordId::from_bytes(b)),
                        Err(_) => tracing::warn!("session row with a malformed id; skipped"),
                    }
                }
                Ok(ids)
            }

            async fn delete_owner(&self, owner: &str) -> Result<u64, session_core::StoreError> {
                if self.queries.cannot_own(owner) {
                    return Ok(0);
                }
                Ok($crate::retrying("delete owner", || async move {
                    on_held!(&self.pool, |conn| sqlx::query(&self.queries.delete_owner)
                        .bind(owner)
                        .bind($crate::now())
                        .execute(conn))
                })
                .await
                .map_err($crate::query_error("delete owner"))?
                .rows_affected())
            }
        }
    };
}
