//! The TSV event file with size-based rotation.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

/// The TSV event file with size-based rotation (`FILE` -> `FILE.1`).
#[derive(Debug)]
pub struct ExportFile {
    path: PathBuf,
    max: u64,
    size: u64,
    out: BufWriter<File>,
}

impl ExportFile {
    /// Opens (appends to) `path`.
    ///
    /// # Errors
    /// The open error.
    pub fn open(path: PathBuf, max: u64) -> io::Result<ExportFile> {
        let f = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = f.metadata()?.len();
        Ok(ExportFile {
            path,
            max,
            size,
            out: BufWriter::new(f),
        })
    }

    /// Appends one line, rotating first if it would pass the size limit.
    ///
    /// # Errors
    /// Write or rotation errors.
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        let n = line.len() as u64 + 1;
        if self.size > 0 && self.size + n > self.max {
            self.out.flush()?;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            std::fs::rename(&self.path, &rotated)?;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.out = BufWriter::new(f);
            self.size = 0;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += n;
        Ok(())
    }

    /// Flushes buffered lines.
    ///
    /// # Errors
    /// The write error.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("varta-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("events.tsv");
        let mut x = ExportFile::open(p.clone(), 4096).unwrap();
        let line = "x".repeat(99);
        for _ in 0..50 {
            x.write_line(&line).unwrap();
        }
        x.flush().unwrap();
        let cur = std::fs::metadata(&p).unwrap().len();
        let old = std::fs::metadata(dir.join("events.tsv.1")).unwrap().len();
        assert_eq!(old, 4000);
        assert_eq!(cur, 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
