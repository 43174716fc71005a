//! A program's log file with size-based rotation: `forge.log`, then `forge.log.1` … `forge.log.N`.
//!
//! Forge can print a lot (tracebacks, progress) for weeks on a rented box with a small disk, so a
//! file that grows forever is not an option; `tail -f /var/log/supervisor/*.log` must keep working,
//! so the current file keeps its name and old content moves aside.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An append-only file that rotates before a write would take it past `max_size`.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl LogFile {
    /// Opens (creating it and its directory) `path` for appending.
    pub fn open(path: &Path, max_size: u64, keep: u32) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            keep,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` and a newline, rotating first when the file would grow past its limit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        self.size += len;
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn rotates_at_the_size_limit_and_keeps_a_few_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/app.log");
        let mut log = LogFile::open(&path, 20, 2).unwrap();
        for i in 0..10 {
            log.write_line(format!("line {i:02} here").as_bytes())
                .unwrap();
        }
        // 14 bytes a line, 20 bytes a file: one line per file.
        assert_eq!(read(&path), "line 09 here\n");
        assert_eq!(read(&dir.path().join("logs/app.log.1")), "line 08 here\n");
        assert_eq!(read(&dir.path().join("logs/app.log.2")), "line 07 here\n");
        assert!(!dir.path().join("logs/app.log.3").exists());
    }

    #[test]
    fn reopening_appends_and_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        LogFile::open(&path, 100, 1)
            .unwrap()
            .write_line(b"first")
            .unwrap();
        let mut again = LogFile::open(&path, 10, 1).unwrap();
        again.write_line(b"second").unwrap();
        assert_eq!(read(&path), "second\n");
        assert_eq!(read(&dir.path().join("a.log.1")), "first\n");
    }

    #[test]
    fn keep_zero_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = LogFile::open(&path, 8, 0).unwrap();
        log.write_line(b"aaaaa").unwrap();
        log.write_line(b"bbbbb").unwrap();
        assert_eq!(read(&path), "bbbbb\n");
        assert!(!dir.path().join("a.log.1").exists());
    }
}
