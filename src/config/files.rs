//! The files a configuration names, checked as `run` will use them: every
//! file it reads can be read, and the database can be created or written
//! where `storage.path` says. `check-config` reports these before `run`
//! fails on them; paths are shown resolved and normalised.

use std::path::{Component, Path, PathBuf};

use super::Config;

/// `path` resolved against `base` (the config file's directory) and
/// normalised lexically: `config/../data/demo.db` → `data/demo.db`.
pub fn resolve(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    let mut clean = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !clean.pop() {
                    clean.push("..");
                }
            }
            other => clean.push(other),
        }
    }
    clean
}

/// The nearest of `dir` and its ancestors that exists: where creating what
/// is missing below it starts (`.` for a relative path none of which exists).
pub fn nearest_existing(dir: &Path) -> &Path {
    dir.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists()).unwrap_or(Path::new("."))
}

/// One file problem: the key that names the path, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// Dotted key, e.g. `scrape.tls_config.ca_file`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
    /// Whether `run` refuses to start on it (a CA file, the database); else
    /// each request that needs the file fails (a secret read per request,
    /// which may appear later).
    pub fatal: bool,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// What `run` would reject in the filesystem, for this process's user.
    pub fn file_problems(&self) -> Vec<FileProblem> {
        let mut problems = Vec::new();
        for (key, path) in self.files_read() {
            if let Err(e) = std::fs::File::open(&path) {
                let fatal = key.contains("tls_config.");
                problems.push(FileProblem { key, message: format!("cannot read {}: {e}", path.display()), fatal });
            }
        }
        if let Some(path) = &self.storage.path
            && let Some(message) = storage_problem(path)
        {
            problems.push(FileProblem { key: "storage.path".into(), message, fatal: true });
        }
        problems
    }

    /// Every file the daemon reads, with the key that names it.
    fn files_read(&self) -> Vec<(String, PathBuf)> {
        let scrape = &self.scrape;
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        files.extend(scrape.tls_config.ca_file.clone().map(|p| ("scrape.tls_config.ca_file".into(), p)));
        files.extend(
            scrape.basic_auth.as_ref().map(|a| ("scrape.basic_auth.password_file".into(), a.password_file.clone())),
        );
        files.extend(scrape.bearer_token_file.clone().map(|p| ("scrape.bearer_token_file".into(), p)));
        for (i, remote) in self.remote_write.iter().enumerate() {
            for (key, path) in remote.files_read() {
                files.push((format!("remote_write[{i}].{key}"), path.to_path_buf()));
            }
        }
        files
    }
}

/// Why the database at `path` could not be created or written, if so.
fn storage_problem(path: &Path) -> Option<String> {
    use rustix::fs::Access;
    let uid = rustix::process::geteuid().as_raw();
    if path.exists() {
        return rustix::fs::access(path, Access::READ_OK | Access::WRITE_OK).err().map(|e| {
            format!(
                "{} cannot be written by this user (uid {uid}): {e}; chown it to the user fleetscrape runs as \
                 (the image: 10001:0), or chmod g+w it for group 0",
                path.display()
            )
        });
    }
    // The nearest existing ancestor must be a directory this user can create entries in.
    let existing = nearest_existing(path.parent()?);
    if !existing.is_dir() {
        return Some(format!(
            "{} is a file, not a directory: the database cannot be created under it",
            existing.display()
        ));
    }
    rustix::fs::access(existing, Access::WRITE_OK | Access::EXEC_OK).err().map(|e| {
        format!(
            "cannot create {} in {} as this user (uid {uid}): {e}; create the directory for that user, or point \
             storage.path at one it can write",
            path.display(),
            existing.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_resolved_and_normalised() {
        let base = Path::new("/work/fleet/config");
        assert_eq!(resolve(base, "../data/demo.db"), Path::new("/work/fleet/data/demo.db"));
        assert_eq!(resolve(base, "./x/./y.db"), Path::new("/work/fleet/config/x/y.db"));
        assert_eq!(resolve(base, "/var/lib/fleetscrape/f.db"), Path::new("/var/lib/fleetscrape/f.db"));
        assert_eq!(resolve(Path::new("/"), "../../a"), Path::new("/a"), "never above the root");
    }

    #[test]
    fn a_storage_path_under_a_regular_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "x").unwrap();
        let message = storage_problem(&file.join("sub/fleet.db")).expect("a problem");
        assert!(message.contains("notes.txt is a file, not a directory"), "{message}");
        assert_eq!(storage_problem(&dir.path().join("new/dir/fleet.db")), None, "created by run");
    }
}
