//! The writer's bulk statements, run on the connection's own SQLite handle.
//!
//! sqlx runs every statement on its connection's worker thread and sends each
//! row back over a channel: a thread wake-up per row read, ~25 % of the
//! writer's CPU in compaction. Its multi-row INSERTs had a shape per chunk
//! size, each kept in the connection's statement cache: 100 prepared INSERTs
//! of up to 250 rows held ~130 MiB under ASG churn. Bulk work instead runs
//! here, synchronously, on the same connection (so in the same transaction),
//! through rusqlite while sqlx's worker is parked: single-row statements,
//! prepared once per call and stepped in a loop, as SQLite's own bulk loaders do.

use rusqlite::ToSql;
use rusqlite::types::{ToSqlOutput, Value};
use sqlx::SqliteConnection;

use super::Error;

/// Runs `work` on the SQLite handle of `conn`, inside whatever transaction
/// `conn` has open. Blocking work: on a multi-threaded runtime the worker
/// thread is handed over (`block_in_place`) while it runs.
pub(super) async fn with_handle<T>(
    conn: &mut SqliteConnection,
    work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> Result<T, Error> {
    let mut handle = conn.lock_handle().await?;
    let raw = handle.as_raw_handle().as_ptr();
    // SAFETY: `handle` holds sqlx's lock on the connection, so no other
    // thread uses it until `handle` drops, after `db`. `from_handle` borrows
    // the handle: dropping `db` finalizes its statements, never closes it.
    #[allow(unsafe_code)]
    let db = unsafe { rusqlite::Connection::from_handle(raw) }?;
    let result = blocking(|| work(&db));
    drop(db);
    drop(handle);
    Ok(result?)
}

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A sample value as SQLite should keep it: integral values as INTEGER (1–8
/// bytes instead of 8), others as REAL; NaN binds as NULL (SQLite's reading
/// of a NaN double).
#[derive(Debug, Clone, Copy)]
pub(super) struct Number(pub f64);

impl Number {
    /// The SQLite value.
    pub(super) fn value(self) -> Value {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        let Self(value) = self;
        if value.fract() == 0.0 && value.abs() < EXACT {
            Value::Integer(value as i64)
        } else if value.is_nan() {
            Value::Null
        } else {
            Value::Real(value)
        }
    }
}

impl ToSql for Number {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(self.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_inside_the_connections_transaction() {
        use sqlx::Connection;
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (v)").execute(&mut conn).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        with_handle(&mut tx, |db| {
            let mut insert = db.prepare("INSERT INTO t VALUES (?1)")?;
            for v in [1.0, 2.5, f64::NAN, 1e300] {
                insert.execute([Number(v)])?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let seen: Vec<(String, Option<f64>)> =
            sqlx::query_as("SELECT typeof(v), CAST(v AS REAL) FROM t ORDER BY rowid")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        assert_eq!(
            seen,
            [
                ("integer".into(), Some(1.0)),
                ("real".into(), Some(2.5)),
                ("null".into(), None),
                ("real".into(), Some(1e300))
            ]
        );
        tx.rollback().await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(&mut conn).await.unwrap();
        assert_eq!(left, 0, "the rows were part of the rolled-back transaction");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn errors_come_back_typed_and_the_connection_stays_usable() {
        use sqlx::Connection;
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let error = with_handle(&mut conn, |db| db.execute("INSERT INTO missing VALUES (1)", [])).await.unwrap_err();
        assert!(error.to_string().contains("no such table: missing"), "{error}");
        let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await.unwrap();
        assert_eq!(one, 1);
    }
}
