//! "Is a supervisor already running?", decided by a lock held for the process's whole life.
//!
//! Launch scripts under Vast's SSH and Jupyter modes run on every container start and may run
//! twice; the second `vastgate up` must notice the first and step aside. A pid file cannot say
//! (`/run` survives `docker restart`, pids are reused, a SIGKILL leaves the file behind); an
//! `flock` on `<socket>.lock` is released by the kernel when its holder dies, however it dies.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// Held while this process is the supervisor for a socket path.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another supervisor holds {0}")]
    Held(PathBuf),
    #[error("cannot open the lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The lock file that goes with a control socket.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock for `socket`, without waiting.
pub fn acquire(socket: &Path) -> Result<InstanceLock, LockError> {
    let path = lock_path(socket);
    let io_error = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error)?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(InstanceLock { _file: file, path }),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(LockError::Held(path)),
        Err(e) => Err(io_error(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/vastgate.sock");
        let first = acquire(&socket).unwrap();
        assert!(matches!(acquire(&socket), Err(LockError::Held(_))));
        drop(first);
        assert!(acquire(&socket).is_ok());
    }
}
