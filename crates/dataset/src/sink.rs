//! Where a dataset's files go: a directory for the command line, a zip for a download.

use std::collections::BTreeMap;
use std::io::{Seek, Write};
use std::path::PathBuf;

/// Takes a dataset's files one by one, by relative path with `/` separators.
pub trait Sink {
    fn put(&mut self, path: &str, bytes: &[u8]) -> std::io::Result<()>;
}

/// Files under a directory, parents created as needed.
#[derive(Debug)]
pub struct DirSink {
    root: PathBuf,
}

impl DirSink {
    pub fn new(root: impl Into<PathBuf>) -> DirSink {
        DirSink { root: root.into() }
    }
}

impl Sink for DirSink {
    fn put(&mut self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)
    }
}

/// A zip archive. JPEGs are stored as they are (deflating them gains nothing and costs
/// the box's CPU); text is deflated.
pub struct ZipSink<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
}

impl<W: Write + Seek> std::fmt::Debug for ZipSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZipSink").finish_non_exhaustive()
    }
}

impl<W: Write + Seek> ZipSink<W> {
    pub fn new(writer: W) -> ZipSink<W> {
        ZipSink { zip: zip::ZipWriter::new(writer) }
    }

    /// Writes the central directory; the archive is unreadable without it.
    pub fn finish(self) -> std::io::Result<W> {
        self.zip.finish().map_err(std::io::Error::other)
    }
}

impl<W: Write + Seek> Sink for ZipSink<W> {
    fn put(&mut self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let method = if path.ends_with(".jpg") || path.ends_with(".jpeg") {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        self.zip.start_file(path, options).map_err(std::io::Error::other)?;
        self.zip.write_all(bytes)
    }
}

/// Files in memory, by path: for tests and snapshots.
#[derive(Debug, Default)]
pub struct MemorySink {
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Sink for MemorySink {
    fn put(&mut self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.files.insert(path.to_owned(), bytes.to_vec());
        Ok(())
    }
}
