//! Advisory locks that keep two `index` or two `crawl` runs off the same
//! workspace. The OS drops the lock when its holder exits or is killed, so a
//! crash never leaves a stale lock behind (the file itself may stay; it is empty).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another `ragmap {command}` is running on {dir}; wait for it to finish")]
    Busy { command: &'static str, dir: PathBuf },
    #[error("cannot create lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes `dir/file_name` for `command` without waiting.
    pub fn acquire(dir: &Path, file_name: &str, command: &'static str) -> Result<Lock, LockError> {
        let path = dir.join(file_name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock_exclusive() {
            Ok(true) => Ok(Lock { _file: file }),
            _ => Err(LockError::Busy {
                command,
                dir: dir.to_path_buf(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::acquire(dir.path(), ".lock", "index").unwrap();
        let err = Lock::acquire(dir.path(), ".lock", "index")
            .unwrap_err()
            .to_string();
        assert!(err.contains("another `ragmap index` is running"), "{err}");
        drop(first);
        Lock::acquire(dir.path(), ".lock", "index").unwrap();
    }
}
