//! One daemon per home: `<home>/devmeshd.lock`, held with `flock` by the
//! daemon from its first moment to its exit.
//!
//! A daemon takes the lock before anything else ([`HomeLock::acquire`]);
//! one that finds it held exits, so a second daemon never touches the
//! home of the first. A CLI that finds no control socket asks
//! [`holder`] first: when a daemon holds the lock it is starting (or
//! stopping), and the CLI waits for its socket instead of starting another.
//! The kernel drops the lock when the process ends, however it ends.
//!
//! ```no_run
//! # fn demo() -> Result<(), mesh_control::lock::LockError> {
//! let home = std::path::Path::new("/home/me/.devmesh");
//! let _lock = mesh_control::lock::HomeLock::acquire(home)?; // held until dropped
//! # Ok(()) }
//! ```

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rustix::fs::FlockOperation;

/// File name of the lock inside the daemon's home.
pub const LOCK_NAME: &str = "devmeshd.lock";

/// How long [`HomeLock::acquire`] keeps trying: a CLI's [`holder`] probe
/// holds the lock for a moment, which must not turn a daemon away.
const PATIENCE: Duration = Duration::from_millis(500);

/// Why the home lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error("opening the lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("locking {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds the home.
    #[error(
        "a devmeshd{} is already running for {}; stop it with `devmesh daemon stop` or use another DEVMESH_HOME",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        home.display()
    )]
    Held { home: PathBuf, pid: Option<u32> },
}

/// The daemon's hold on its home; released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct HomeLock {
    _file: File,
}

impl HomeLock {
    /// Takes the lock of `home` (which must exist) and writes this
    /// process's id into it, or fails with [`LockError::Held`] naming the
    /// daemon that has it.
    pub fn acquire(home: &Path) -> Result<Self, LockError> {
        let path = home.join(LOCK_NAME);
        let mut file = open(&path).map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?;
        let started = Instant::now();
        loop {
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) if started.elapsed() < PATIENCE => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(LockError::Held {
                        home: home.to_owned(),
                        pid: read_pid(&mut file),
                    });
                }
                Err(e) => {
                    return Err(LockError::Lock {
                        path,
                        source: e.into(),
                    });
                }
            }
        }
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        write(&mut file).map_err(|source| LockError::Lock { path, source })?;
        Ok(Self { _file: file })
    }
}

/// A daemon holding the lock of a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Its process id, as it wrote it (absent while it is being written).
    pub pid: Option<u32>,
}

/// The daemon holding the lock of `home`, if any: a daemon is starting,
/// running or stopping there. `None` when no process holds it (or the
/// home does not exist yet).
pub fn holder(home: &Path) -> std::io::Result<Option<Holder>> {
    if !home.is_dir() {
        return Ok(None);
    }
    let mut file = open(&home.join(LOCK_NAME))?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {
            rustix::fs::flock(&file, FlockOperation::Unlock)?;
            Ok(None)
        }
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(Some(Holder {
            pid: read_pid(&mut file),
        })),
        Err(e) => Err(e.into()),
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(holder(home.path()).unwrap(), None);
        let lock = HomeLock::acquire(home.path()).unwrap();
        assert_eq!(
            holder(home.path()).unwrap(),
            Some(Holder {
                pid: Some(std::process::id())
            })
        );
        let refused = HomeLock::acquire(home.path()).unwrap_err();
        assert!(
            refused.to_string().starts_with(&format!(
                "a devmeshd (pid {}) is already running for ",
                std::process::id()
            )),
            "{refused}"
        );
        drop(lock);
        assert_eq!(holder(home.path()).unwrap(), None);
        let _again = HomeLock::acquire(home.path()).unwrap();
    }

    #[test]
    fn a_missing_home_has_no_holder() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(holder(&home.path().join("nope")).unwrap(), None);
    }
}
