//! The file edge: a recording file that is `fdatasync`ed after every fragment.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::mux::Patch;
use crate::track::Written;

/// A recording file. Write through it (it is a [`Write`]), then hand each
/// [`Written`] to [`FileSink::commit`], which syncs when a fragment ended.
pub struct FileSink {
    file: File,
    path: PathBuf,
    bytes: u64,
    synced: u64,
}

impl FileSink {
    /// Create the file (it must not exist) and sync its directory entry, so
    /// a power cut cannot lose the file that later fragments were synced into.
    pub fn create(path: &Path) -> io::Result<FileSink> {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(FileSink { file, path: path.to_path_buf(), bytes: 0, synced: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Fragments (and the init segment) synced so far.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Sync if `w` completed a fragment.
    pub fn commit(&mut self, w: Written) -> io::Result<()> {
        if w.fragments > 0 {
            self.file.sync_data()?;
            self.synced += w.fragments as u64;
        }
        Ok(())
    }

    /// Write the final duration and sync: the file is complete.
    pub fn finalise(mut self, w: Written, patch: Option<&Patch>) -> io::Result<()> {
        if let Some(p) = patch {
            p.apply_to_file(&self.file)?;
        }
        self.commit(Written { fragments: w.fragments.max(1), ..w })
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
