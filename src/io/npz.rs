//! NumPy `.npz` archives (zip, deflated by `numpy.savez_compressed` or
//! stored by `numpy.savez`): members read with bounded reads and a CRC
//! check, and an atomic writer with fixed timestamps (same content, same bytes).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::npy::NpyHeader;
use super::{open_regular, FormatError, Source};

/// An open `.npz` archive.
pub struct NpzArchive {
    zip: zip::ZipArchive<io::BufReader<std::fs::File>>,
    path: PathBuf,
}

impl NpzArchive {
    /// Opens `path` (a regular file) and reads its central directory.
    pub fn open(path: &Path) -> Result<NpzArchive, FormatError> {
        let file = open_regular(path)?;
        let zip = zip::ZipArchive::new(io::BufReader::new(file))
            .map_err(|e| FormatError::Archive { src: Source::file(path), reason: e.to_string() })?;
        Ok(NpzArchive { zip, path: path.to_path_buf() })
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads member `name`'s header and exactly the data bytes it implies.
    /// The read is bounded by that size, so a lying header cannot make it
    /// allocate more than the archive really holds; reading on to the end
    /// makes the zip reader verify the CRC.
    pub fn member(&mut self, name: &'static str) -> Result<(NpyHeader, Vec<u8>), FormatError> {
        let src = Source::member(&self.path, name);
        let archive_err = |e: zip::result::ZipError| match e {
            zip::result::ZipError::FileNotFound => FormatError::MissingMember { src: src.clone() },
            e => FormatError::Archive { src: src.clone(), reason: e.to_string() },
        };
        let mut entry = self.zip.by_name(name).map_err(archive_err)?;
        let declared = entry.size();
        let header = NpyHeader::read(&mut entry, &src)?;
        header.expect_scalar(&src, |_| true, "a numeric dtype")?;
        let want = header.data_bytes().unwrap_or(usize::MAX) as u64;
        let mut raw = Vec::with_capacity(want.min(declared) as usize);
        (&mut entry).take(want).read_to_end(&mut raw).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                FormatError::Archive { src: src.clone(), reason: e.to_string() }
            }
            _ => FormatError::Io { src: src.clone(), source: e },
        })?;
        let mut rest = [0u8; 1];
        let trailing =
            entry.read(&mut rest).map_err(|e| FormatError::Archive { src: src.clone(), reason: e.to_string() })?;
        if raw.len() as u64 != want || trailing != 0 {
            let actual = raw.len() as u64 + trailing as u64;
            return Err(FormatError::Truncated { src, expected: want, actual });
        }
        Ok((header, raw))
    }
}

/// Writes `.npy`-encoded members as an `.npz` archive, atomically: deflated
/// like `numpy.savez_compressed` or stored like `numpy.savez`.
pub fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], compressed: bool) -> io::Result<()> {
    let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    // A fixed timestamp (1980-01-01) keeps the file a function of its content.
    let options =
        zip::write::FileOptions::default().compression_method(method).last_modified_time(zip::DateTime::default());
    let mut buf = io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        for (name, bytes) in members {
            zip.start_file(*name, options)?;
            zip.write_all(bytes)?;
        }
        zip.finish()?;
    }
    super::write_atomic(path, &buf.into_inner())
}
