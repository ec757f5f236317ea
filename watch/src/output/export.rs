//! The TSV event file: opened with the observer's file rules ([`crate::fsutil`]: no symbolic
//! link, mode 0600, ours), rotated by size keeping [`GENERATIONS`] old files `PATH.1` (newest)
//! … `PATH.5`, `fdatasync`ed every `--export-file-sync-every` records (0: only at rotation and
//! shutdown). Written by its own thread ([`super::writer`]), never by the receive loop.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use super::writer::LineSink;
use crate::fsutil::{self, PrivateFileError};

/// Old files kept by rotation.
pub const GENERATIONS: u32 = 5;

/// The TSV event file with size-based rotation.
#[derive(Debug)]
pub struct ExportFile {
    path: PathBuf,
    max: u64,
    size: u64,
    sync_every: u32,
    unsynced: u32,
    out: Option<BufWriter<File>>,
}

impl ExportFile {
    /// Opens (appends to) `path`; rotates at `max` bytes; syncs every `sync_every` records (0:
    /// only at rotation and shutdown).
    ///
    /// # Errors
    /// [`PrivateFileError`] naming the failed rule.
    pub fn open(path: PathBuf, max: u64, sync_every: u32) -> Result<ExportFile, PrivateFileError> {
        let f = fsutil::open_private(&path, false)?;
        let size = f
            .metadata()
            .map_err(|source| PrivateFileError::Io { op: "stat", source })?
            .len();
        Ok(ExportFile {
            path,
            max,
            size,
            sync_every,
            unsynced: 0,
            out: Some(BufWriter::new(f)),
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            out.flush()?;
            if self.unsynced > 0 {
                rustix::fs::fdatasync(out.get_ref())?;
                self.unsynced = 0;
            }
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.unsynced = self.unsynced.max(1);
        self.sync()?;
        self.out = None;
        fsutil::rotate(&self.path, GENERATIONS)?;
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        let f = fsutil::open_private(&self.path, false)?;
        self.size = f.metadata()?.len();
        self.out = Some(BufWriter::new(f));
        Ok(())
    }
}

impl LineSink for ExportFile {
    /// Appends one line, rotating first if it would pass the size limit; a file lost to a
    /// failed rotation is reopened on the next line.
    fn write_line(&mut self, line: &str) -> io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.out.is_none() {
            self.reopen()?;
        }
        if self.size > 0 && self.size + n > self.max {
            self.rotate()?;
        }
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("export file not open"));
        };
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        self.size += n;
        self.unsynced += 1;
        if self.sync_every > 0 && self.unsynced >= self.sync_every {
            self.sync()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> io::Result<()> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_rotates_by_size_keeping_five_generations() {
        let dir = std::env::temp_dir().join(format!("varta-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.tsv");
        let mut x = ExportFile::open(p.clone(), 4096, 7).unwrap();
        let line = "x".repeat(99);
        // 40 lines per file; 7 files' worth.
        for _ in 0..(40 * 6 + 10) {
            x.write_line(&line).unwrap();
        }
        x.close().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1000);
        for n in 1..=GENERATIONS {
            let len = std::fs::metadata(fsutil::generation(&p, n)).unwrap().len();
            assert_eq!(len, 4000, "generation {n}");
        }
        assert!(!fsutil::generation(&p, GENERATIONS + 1).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
