//! What a database path holds, found without writing to it: `run` refuses a
//! database that is not fleetscrape's (it would add its schema to it), and
//! `report` names what is wrong with a path instead of "no such table".

use std::path::{Path, PathBuf};

use sqlx::sqlite::SqliteConnectOptions;

use super::{Error, MIGRATOR};

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Nothing: the file does not exist.
    Missing,
    /// An empty file, or a SQLite database without tables.
    Empty,
    /// A database with fleetscrape's migrations.
    Fleetscrape,
    /// A database of something else, with these tables.
    Foreign(Vec<String>),
}

/// Why a path is not a database at all.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path is a directory.
    #[error("{} is a directory, not a database file", .0.display())]
    Directory(PathBuf),
    /// The file does not start with SQLite's header.
    #[error("{} is not a SQLite database (its first bytes are not SQLite's header)", .0.display())]
    NotSqlite(PathBuf),
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Options that open `path` for reading only: SQLite creates no file and
/// writes nothing. A live writer keeps `-wal` and `-shm` beside the
/// database, which a reader needs only to read; without a `-wal` no writer
/// is running and the file is opened immutable, so a user who cannot write
/// the directory can still read it.
pub fn read_only_options(path: &Path) -> SqliteConnectOptions {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let writer_running = Path::new(&wal).exists();
    SqliteConnectOptions::new().filename(path).read_only(true).immutable(!writer_running)
}

/// Reads what `path` holds.
///
/// # Errors
/// [`Error::Path`] when it is a directory, unreadable or not SQLite;
/// [`Error::Open`] when SQLite cannot read it.
pub async fn identify(path: &Path) -> Result<Contents, Error> {
    let unreadable = |source| Error::Path(PathError::Unreadable { path: path.to_path_buf(), source });
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::Missing),
        Err(e) => return Err(unreadable(e)),
    };
    if metadata.is_dir() {
        return Err(Error::Path(PathError::Directory(path.to_path_buf())));
    }
    if metadata.len() == 0 {
        return Ok(Contents::Empty);
    }
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header));
    match read {
        Ok(()) if &header == SQLITE_HEADER => {}
        Ok(()) => return Err(Error::Path(PathError::NotSqlite(path.to_path_buf()))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(Error::Path(PathError::NotSqlite(path.to_path_buf())));
        }
        Err(e) => return Err(unreadable(e)),
    }
    let open_error = |e: sqlx::Error| Error::Open { path: path.to_path_buf(), source: e.into() };
    let mut connection: sqlx::SqliteConnection =
        <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&read_only_options(path))
            .await
            .map_err(open_error)?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut connection)
    .await
    .map_err(open_error)?;
    let contents = if tables.is_empty() {
        Contents::Empty
    } else if tables.iter().any(|t| t == "_sqlx_migrations") && has_our_first_migration(&mut connection).await {
        Contents::Fleetscrape
    } else {
        Contents::Foreign(tables)
    };
    let _ = sqlx::Connection::close(connection).await;
    Ok(contents)
}

/// Whether `_sqlx_migrations` records fleetscrape's first migration (another
/// sqlx application has the table too, with its own).
async fn has_our_first_migration(connection: &mut sqlx::SqliteConnection) -> bool {
    let Some(first) = MIGRATOR.iter().next() else { return false };
    let description: Option<String> = sqlx::query_scalar("SELECT description FROM _sqlx_migrations WHERE version = ?")
        .bind(first.version)
        .fetch_optional(connection)
        .await
        .ok()
        .flatten();
    description.as_deref() == Some(&*first.description)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_path_is_missing_empty_ours_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        assert_eq!(identify(&db).await.unwrap(), Contents::Missing);
        std::fs::write(&db, b"").unwrap();
        assert_eq!(identify(&db).await.unwrap(), Contents::Empty);
        crate::store::Store::open(&db).await.unwrap().close().await;
        assert_eq!(identify(&db).await.unwrap(), Contents::Fleetscrape);

        let other = dir.path().join("other.db");
        let options = SqliteConnectOptions::new().filename(&other).create_if_missing(true);
        let mut connection: sqlx::SqliteConnection =
            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE _sqlx_migrations (version BIGINT, description TEXT)")
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations VALUES (1, 'someone else')").execute(&mut connection).await.unwrap();
        sqlx::query("CREATE TABLE orders (id INTEGER)").execute(&mut connection).await.unwrap();
        sqlx::Connection::close(connection).await.unwrap();
        assert_eq!(
            identify(&other).await.unwrap(),
            Contents::Foreign(vec!["_sqlx_migrations".into(), "orders".into()])
        );
    }

    #[tokio::test]
    async fn a_directory_or_a_text_file_is_no_database() {
        let dir = tempfile::tempdir().unwrap();
        let directory = identify(dir.path()).await.unwrap_err().to_string();
        assert!(directory.ends_with("is a directory, not a database file"), "{directory}");
        let text = dir.path().join("x.db");
        std::fs::write(&text, "short").unwrap();
        assert!(identify(&text).await.unwrap_err().to_string().contains("is not a SQLite database"));
    }
}
