//! One writer per database: `run` holds an advisory lock on a sidecar file,
//! `<database>.lock`, for the life of the process.
//!
//! Advisory (`flock`), not SQLite's `locking_mode=EXCLUSIVE`, which would
//! lock Grafana and `report` out too. The lock goes with the process, however
//! it ends (`kill -9` included), so a stale lock file is harmless and is
//! never deleted (deleting it would let two processes lock two different
//! files of the same name). Network filesystems may not honour `flock`:
//! keep the database on a local disk.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the database {} is in use by another fleetscrape run{} (it holds {}): stop that one first, or set storage.path to another file",
        database.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        lock.display()
    )]
    InUse {
        /// The database.
        database: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's process id, as it wrote it.
        holder: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl WriterLock {
    /// Takes the lock beside `database` (its directory must exist), without
    /// waiting, and writes this process's id into it.
    ///
    /// # Errors
    /// [`LockError::InUse`] when another process holds it.
    pub fn acquire(database: &Path) -> Result<Self, LockError> {
        let mut lock = database.as_os_str().to_owned();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let io = |source| LockError::Io { lock: lock.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::InUse {
                    database: database.to_path_buf(),
                    lock,
                    holder: text.trim().parse().ok(),
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        let record = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        record.map_err(io)?;
        Ok(Self { _file: file, path: lock })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let first = WriterLock::acquire(&db).unwrap();
        let refused = WriterLock::acquire(&db).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("is in use by another fleetscrape run"), "{message}");
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        assert_eq!(std::fs::read_to_string(first.path()).unwrap().trim(), std::process::id().to_string());
        drop(first);
        WriterLock::acquire(&db).expect("free again once dropped");
    }
}
