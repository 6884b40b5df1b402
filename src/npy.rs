//! NumPy file decoding: `.npy` headers (parsed once, kept as a small
//! `Clone + Send` struct), memory-mapped dense frames and sparse `.npz` frames.
//!
//! Every decoder is defensive: sizes come from untrusted headers, so each is
//! checked against the bytes that really exist before anything is allocated
//! or indexed, and every failure is an [`NpyError`] naming the file.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use memmap2::Mmap;
use npyz::{Endianness, TypeChar, TypeStr};

/// Most channels a frame may have (the format has 4); bounds the output size.
pub const MAX_CHANNELS: usize = 64;
/// Largest spatial dimension accepted (the real grid's largest is 600).
pub const MAX_DIM: usize = 1 << 16;

/// numpy refuses headers longer than this by default (`max_header_size`).
const MAX_HEADER_LEN: usize = 10_000;

/// Where a decoding problem was found: a file, and for `.npz` the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file on disk.
    pub path: PathBuf,
    /// The archive member (`coords.npy`, ...) for `.npz` files.
    pub member: Option<&'static str>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.member {
            Some(m) => write!(f, "{}[{m}]", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

impl Source {
    fn file(path: &Path) -> Self {
        Source { path: path.to_path_buf(), member: None }
    }
    fn member(path: &Path, member: &'static str) -> Self {
        Source { path: path.to_path_buf(), member: Some(member) }
    }
}

/// Errors of the NumPy decoding layer; each names the file (and member).
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be opened or read.
    #[error("{src}: {source}")]
    Io {
        /// File that failed.
        src: Source,
        /// Underlying I/O error.
        source: io::Error,
    },
    /// Not an `.npy` stream, or its header cannot be parsed.
    #[error("{src}: not a valid .npy header: {reason}")]
    Header {
        /// File that failed.
        src: Source,
        /// What was wrong.
        reason: String,
    },
    /// The `.npz` archive itself is corrupt.
    #[error("{src}: corrupt .npz archive: {reason}")]
    Archive {
        /// File that failed.
        src: Source,
        /// What the zip reader reported.
        reason: String,
    },
    /// A required `.npz` member is absent.
    #[error("{src}: member missing from .npz archive")]
    MissingMember {
        /// File and missing member.
        src: Source,
    },
    /// The data is shorter (or longer) than the header says.
    #[error("{src}: data is {actual} bytes, header implies {expected} (truncated or corrupt)")]
    Truncated {
        /// File that failed.
        src: Source,
        /// Bytes implied by the header.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// The element type is not one this reader accepts here.
    #[error("{src}: dtype {dtype} not supported here, expected {expected}")]
    Dtype {
        /// File that failed.
        src: Source,
        /// dtype found in the header (numpy spelling, e.g. `<i8`).
        dtype: String,
        /// Accepted dtypes.
        expected: &'static str,
    },
    /// The array has the wrong rank or shape.
    #[error("{src}: shape {shape:?} is invalid: expected {expected}")]
    Shape {
        /// File that failed.
        src: Source,
        /// Shape found.
        shape: Vec<usize>,
        /// What was expected.
        expected: String,
    },
    /// A sparse coordinate lies outside the dense grid.
    #[error("{src}: voxel {index} has coordinate {coord:?} outside the grid {grid:?}")]
    OutOfGrid {
        /// File that failed.
        src: Source,
        /// Row of `coords.npy`.
        index: usize,
        /// The coordinate.
        coord: [i64; 3],
        /// The `(H, W, Z)` grid.
        grid: [usize; 3],
    },
    /// The same voxel is listed twice in a sparse frame.
    #[error("{src}: voxel {coord:?} is listed more than once")]
    Duplicate {
        /// File that failed.
        src: Source,
        /// The repeated `(x, y, z)` coordinate.
        coord: [usize; 3],
    },
    /// A value is NaN or infinite, or overflows float16.
    #[error("{src}: {problem} value {value} at voxel {voxel:?} channel {channel}")]
    BadValue {
        /// File that failed.
        src: Source,
        /// `(x, y, z)` index of the voxel.
        voxel: [usize; 3],
        /// Channel of the value.
        channel: usize,
        /// The offending value.
        value: f64,
        /// `non-finite` or `float16-overflowing`.
        problem: &'static str,
    },
}

/// Element types the reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// IEEE half precision (`f2`).
    F16,
    /// IEEE single precision (`f4`).
    F32,
    /// IEEE double precision (`f8`).
    F64,
    /// 32-bit signed integer (`i4`).
    I32,
    /// 64-bit signed integer (`i8`).
    I64,
}

impl Scalar {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Scalar::F16 => 2,
            Scalar::F32 | Scalar::I32 => 4,
            Scalar::F64 | Scalar::I64 => 8,
        }
    }
}

/// A parsed `.npy` element type: the numpy spelling plus, when the reader
/// can decode it, the scalar and byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtype {
    /// numpy's type string, e.g. `<f4`.
    pub descr: String,
    /// Decodable scalar type, if any.
    pub scalar: Option<Scalar>,
    /// Big-endian storage (`>`).
    pub big_endian: bool,
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.descr)
    }
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        let ts = TypeStr::from_str(descr).ok()?;
        let scalar = match (ts.type_char(), ts.size_field()) {
            (TypeChar::Float, 2) => Some(Scalar::F16),
            (TypeChar::Float, 4) => Some(Scalar::F32),
            (TypeChar::Float, 8) => Some(Scalar::F64),
            (TypeChar::Int, 4) => Some(Scalar::I32),
            (TypeChar::Int, 8) => Some(Scalar::I64),
            _ => None,
        };
        Some(Dtype { descr: descr.to_string(), scalar, big_endian: ts.endianness() == Endianness::Big })
    }
}

/// The parsed header of one `.npy` array: where the data starts, its shape,
/// element type and order. Cheap to clone and send to worker threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Byte offset of the first element.
    pub offset: usize,
    /// Array shape.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: Dtype,
    /// Column-major (Fortran) element order.
    pub fortran_order: bool,
}

impl NpyHeader {
    /// Number of elements (checked: `None` on overflow).
    pub fn len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }

    /// Whether the array holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// Bytes of element data the header implies (`None` on overflow or an
    /// element type without a fixed size the reader knows).
    pub fn data_bytes(&self) -> Option<usize> {
        self.len()?.checked_mul(self.dtype.scalar?.size())
    }

    /// Parses a header from the start of a stream, leaving the stream at the
    /// first data byte. `src` names the stream in errors.
    pub fn read(mut r: impl Read, src: &Source) -> Result<NpyHeader, NpyError> {
        let bad = |reason: String| NpyError::Header { src: src.clone(), reason };
        let mut pre = [0u8; 10];
        read_exact_or(&mut r, &mut pre, src, || bad("file shorter than the .npy preamble".into()))?;
        if &pre[..6] != b"\x93NUMPY" {
            return Err(bad("magic string \\x93NUMPY not found".into()));
        }
        let (text_len, prefix) = match pre[6] {
            1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
            2 | 3 => {
                let mut more = [0u8; 2];
                read_exact_or(&mut r, &mut more, src, || bad("truncated header length".into()))?;
                (u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize, 12)
            }
            v => return Err(bad(format!("unsupported format version {v}.{}", pre[7]))),
        };
        if text_len > MAX_HEADER_LEN {
            return Err(bad(format!("header of {text_len} bytes exceeds {MAX_HEADER_LEN}")));
        }
        let mut text = vec![0u8; text_len];
        read_exact_or(&mut r, &mut text, src, || bad("truncated header text".into()))?;
        let text = std::str::from_utf8(&text).map_err(|_| bad("header text is not UTF-8".into()))?;
        let dict = parse_header_dict(text).map_err(bad)?;
        let dtype = Dtype::parse(&dict.descr).ok_or_else(|| bad(format!("unknown dtype descr {:?}", dict.descr)))?;
        let header =
            NpyHeader { offset: prefix + text_len, shape: dict.shape, dtype, fortran_order: dict.fortran_order };
        if header.len().is_none() {
            return Err(bad(format!("shape {:?} overflows", header.shape)));
        }
        Ok(header)
    }

    /// Reads just the header of a `.npy` file.
    pub fn read_file(path: &Path) -> Result<NpyHeader, NpyError> {
        let src = Source::file(path);
        let file = File::open(path).map_err(|source| NpyError::Io { src: src.clone(), source })?;
        NpyHeader::read(io::BufReader::with_capacity(4096, file), &src)
    }

    /// Requires the given decodable scalar types.
    fn expect_scalar(&self, src: &Source, allowed: &[Scalar], expected: &'static str) -> Result<Scalar, NpyError> {
        match self.dtype.scalar {
            Some(s) if allowed.contains(&s) => Ok(s),
            _ => Err(NpyError::Dtype { src: src.clone(), dtype: self.dtype.descr.clone(), expected }),
        }
    }
}

fn read_exact_or(
    r: &mut impl Read,
    buf: &mut [u8],
    src: &Source,
    on_eof: impl FnOnce() -> NpyError,
) -> Result<(), NpyError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => on_eof(),
        _ => NpyError::Io { src: src.clone(), source: e },
    })
}

struct HeaderDict {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses numpy's header literal, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (600, 200, 80, 4), }`.
/// A small hand parser: the grammar is fixed by numpy and it must never
/// recurse or allocate by what untrusted input says.
fn parse_header_dict(text: &str) -> Result<HeaderDict, String> {
    let mut p = Lexer { s: text.trim_end_matches(['\n', ' ', '\0']).as_bytes(), i: 0 };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.expect(b':')?;
        match key.as_str() {
            "descr" => descr = Some(p.string()?),
            "fortran_order" => fortran = Some(p.boolean()?),
            "shape" => shape = Some(p.tuple()?),
            other => return Err(format!("unexpected key {other:?}")),
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err("trailing characters after the header dict".into());
    }
    Ok(HeaderDict {
        descr: descr.ok_or("missing 'descr'")?,
        fortran_order: fortran.ok_or("missing 'fortran_order'")?,
        shape: shape.ok_or("missing 'shape'")?,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let q = *self.s.get(self.i).ok_or("unexpected end of header")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a string at byte {}", self.i));
        }
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&c| c == q).ok_or("unterminated string")?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec()).map_err(|_| "string is not UTF-8".into())
    }
    fn boolean(&mut self) -> Result<bool, String> {
        self.skip_ws();
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }
    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            if start == self.i {
                return Err(format!("expected a dimension at byte {start}"));
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII digits");
            dims.push(digits.parse::<usize>().map_err(|_| format!("dimension {digits} too large"))?);
            if dims.len() > 32 {
                return Err("more than 32 dimensions".into());
            }
            self.eat(b'L'); // Python 2 long suffix
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

/// A dense `(H, W, Z, C)` frame: its header, parsed once. Reading maps the
/// file; nothing is copied to the heap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenseFile {
    /// The `.npy` file.
    pub path: PathBuf,
    /// Its parsed header.
    pub header: NpyHeader,
}

impl DenseFile {
    /// Parses and validates the header: rank 4, a float dtype, and a file
    /// length that matches it exactly.
    pub fn open(path: &Path) -> Result<DenseFile, NpyError> {
        let header = NpyHeader::read_file(path)?;
        let src = Source::file(path);
        header.expect_scalar(&src, &[Scalar::F16, Scalar::F32, Scalar::F64], "<f2, <f4 or <f8")?;
        if !valid_grid(&header.shape) {
            return Err(NpyError::Shape { src, shape: header.shape.clone(), expected: GRID_RULE.into() });
        }
        let dense = DenseFile { path: path.to_path_buf(), header };
        dense.check_len(
            std::fs::metadata(path).map_err(|source| NpyError::Io { src: Source::file(path), source })?.len(),
        )?;
        Ok(dense)
    }

    /// Dense shape `(H, W, Z, C)`.
    pub fn shape(&self) -> [usize; 4] {
        let s = &self.header.shape;
        [s[0], s[1], s[2], s[3]]
    }

    fn check_len(&self, actual: u64) -> Result<(), NpyError> {
        let data = self.header.data_bytes().map_or(u64::MAX, |b| b as u64);
        let expected = (self.header.offset as u64).saturating_add(data);
        if actual != expected {
            return Err(NpyError::Truncated { src: Source::file(&self.path), expected, actual });
        }
        Ok(())
    }

    /// Maps the file read-only and returns a view of its elements.
    pub fn map(&self) -> Result<MappedDense, NpyError> {
        let src = Source::file(&self.path);
        let file = File::open(&self.path).map_err(|source| NpyError::Io { src: src.clone(), source })?;
        let len = file.metadata().map_err(|source| NpyError::Io { src: src.clone(), source })?.len();
        // The file may have changed since `open`: check again before mapping.
        self.check_len(len)?;
        // SAFETY: the map is read-only and private to this reader. Dataset
        // files are inputs that nothing truncates while training reads them;
        // the length was checked against the header just above, so every
        // index the decoder computes lies inside the mapping.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| NpyError::Io { src, source })?;
        Ok(MappedDense { mmap, file: self.clone() })
    }
}

/// A memory-mapped dense frame.
pub struct MappedDense {
    mmap: Mmap,
    file: DenseFile,
}

impl MappedDense {
    /// Element bytes (after the header).
    pub fn data(&self) -> &[u8] {
        &self.mmap[self.file.header.offset..]
    }
}

/// A decoded sparse frame: occupied voxels and their channel values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseFrame {
    /// Dense shape `(H, W, Z, C)`.
    pub shape: [usize; 4],
    /// `(x, y, z)` per occupied voxel, validated to lie inside the grid.
    pub coords: Vec<[u32; 3]>,
    /// `C` values per voxel, row-major, widened to f64 so every source dtype
    /// rounds to f16 exactly once, as numpy's `astype` does.
    pub features: Vec<f64>,
}

impl SparseFrame {
    /// Number of listed voxels.
    pub fn len(&self) -> usize {
        self.coords.len()
    }
    /// Whether no voxel is listed.
    pub fn is_empty(&self) -> bool {
        self.coords.is_empty()
    }
}

/// Reads the `(H, W, Z, C)` shape of a sparse `.npz` frame (only `shape.npy`
/// is decompressed).
pub fn read_npz_shape(path: &Path) -> Result<[usize; 4], NpyError> {
    let mut zip = open_zip(path)?;
    read_shape_member(&mut zip, path)
}

/// Decodes a sparse `.npz` frame (`coords`, `features`, `shape`) written by
/// `numpy.savez` or `numpy.savez_compressed`, checking that members agree,
/// coordinates lie inside the grid and no voxel repeats.
pub fn read_npz(path: &Path) -> Result<SparseFrame, NpyError> {
    let mut zip = open_zip(path)?;
    let shape = read_shape_member(&mut zip, path)?;
    let (ch, coords_raw) = read_member(&mut zip, path, "coords.npy", &[Scalar::I64, Scalar::I32], "<i8 or <i4")?;
    let (fh, features_raw) =
        read_member(&mut zip, path, "features.npy", &[Scalar::F16, Scalar::F32, Scalar::F64], "<f2, <f4 or <f8")?;
    let n = match ch.shape.as_slice() {
        [n, 3] => *n,
        _ => {
            return Err(NpyError::Shape {
                src: Source::member(path, "coords.npy"),
                shape: ch.shape,
                expected: "(N, 3)".into(),
            })
        }
    };
    if fh.shape.as_slice() != [n, shape[3]] {
        return Err(NpyError::Shape {
            src: Source::member(path, "features.npy"),
            shape: fh.shape,
            expected: format!("({n}, {}) to match coords.npy and shape.npy", shape[3]),
        });
    }
    let ints = decode_ints(&coords_raw, &ch.dtype);
    let grid = [shape[0], shape[1], shape[2]];
    let mut coords = Vec::with_capacity(n);
    for (index, c) in ints.chunks_exact(3).enumerate() {
        let coord = [c[0], c[1], c[2]];
        if (0..3).any(|k| coord[k] < 0 || coord[k] as u64 >= grid[k] as u64) {
            return Err(NpyError::OutOfGrid { src: Source::member(path, "coords.npy"), index, coord, grid });
        }
        coords.push([coord[0] as u32, coord[1] as u32, coord[2] as u32]);
    }
    check_unique(&coords, grid, path)?;
    let features = decode_floats(&features_raw, &fh.dtype);
    Ok(SparseFrame { shape, coords, features })
}

fn check_unique(coords: &[[u32; 3]], grid: [usize; 3], path: &Path) -> Result<(), NpyError> {
    let key = |c: &[u32; 3]| (c[0] as u64 * grid[1] as u64 + c[1] as u64) * grid[2] as u64 + c[2] as u64;
    let mut keys: Vec<u64> = coords.iter().map(key).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        let k = w[0];
        let (zs, ws) = (grid[2] as u64, grid[1] as u64);
        let coord = [(k / zs / ws) as usize, (k / zs % ws) as usize, (k % zs) as usize];
        return Err(NpyError::Duplicate { src: Source::member(path, "coords.npy"), coord });
    }
    Ok(())
}

const GRID_RULE: &str = "rank 4 (H, W, Z, C), each dim >= 1, H, W, Z <= 65536, C <= 64";

fn valid_grid(shape: &[usize]) -> bool {
    shape.len() == 4
        && shape.iter().all(|&d| d >= 1)
        && shape[..3].iter().all(|&d| d <= MAX_DIM)
        && shape[3] <= MAX_CHANNELS
}

type Zip = zip::ZipArchive<io::BufReader<File>>;

fn open_zip(path: &Path) -> Result<Zip, NpyError> {
    let src = Source::file(path);
    let file = File::open(path).map_err(|source| NpyError::Io { src: src.clone(), source })?;
    zip::ZipArchive::new(io::BufReader::new(file)).map_err(|e| NpyError::Archive { src, reason: e.to_string() })
}

fn read_shape_member(zip: &mut Zip, path: &Path) -> Result<[usize; 4], NpyError> {
    let (h, raw) = read_member(zip, path, "shape.npy", &[Scalar::I64, Scalar::I32], "<i8 or <i4")?;
    let dims = decode_ints(&raw, &h.dtype);
    let src = Source::member(path, "shape.npy");
    let shape_err = |expected: &str| NpyError::Shape {
        src: src.clone(),
        shape: dims.iter().map(|&d| d.max(0) as usize).collect(),
        expected: expected.into(),
    };
    if h.shape.as_slice() != [4] {
        return Err(NpyError::Shape { src, shape: h.shape, expected: "(4,) holding (H, W, Z, C)".into() });
    }
    let shape = dims.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect::<Vec<_>>();
    if !valid_grid(&shape) {
        return Err(shape_err(GRID_RULE));
    }
    Ok([shape[0], shape[1], shape[2], shape[3]])
}

/// Reads one member's header and exactly the data bytes it implies. The
/// read is bounded by that size, so a lying header cannot make it allocate
/// more than the archive really holds.
fn read_member(
    zip: &mut Zip,
    path: &Path,
    member: &'static str,
    allowed: &[Scalar],
    expected: &'static str,
) -> Result<(NpyHeader, Vec<u8>), NpyError> {
    let src = Source::member(path, member);
    let archive_err = |e: zip::result::ZipError| match e {
        zip::result::ZipError::FileNotFound => NpyError::MissingMember { src: src.clone() },
        e => NpyError::Archive { src: src.clone(), reason: e.to_string() },
    };
    let mut entry = zip.by_name(member).map_err(archive_err)?;
    let declared = entry.size();
    let header = NpyHeader::read(&mut entry, &src)?;
    header.expect_scalar(&src, allowed, expected)?;
    let want = header.data_bytes().unwrap_or(usize::MAX) as u64;
    let mut raw = Vec::with_capacity(want.min(declared) as usize);
    (&mut entry).take(want).read_to_end(&mut raw).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
            NpyError::Archive { src: src.clone(), reason: e.to_string() }
        }
        _ => NpyError::Io { src: src.clone(), source: e },
    })?;
    // Reading on to the end also makes the zip reader verify the CRC.
    let mut rest = [0u8; 1];
    let trailing = entry.read(&mut rest).map_err(|e| NpyError::Archive { src: src.clone(), reason: e.to_string() })?;
    if raw.len() as u64 != want || trailing != 0 {
        let actual = raw.len() as u64 + trailing as u64;
        return Err(NpyError::Truncated { src, expected: want, actual });
    }
    Ok((header, raw))
}

fn decode_ints(raw: &[u8], dtype: &Dtype) -> Vec<i64> {
    let be = dtype.big_endian;
    match dtype.scalar {
        Some(Scalar::I32) => raw
            .chunks_exact(4)
            .map(|b| {
                let b = [b[0], b[1], b[2], b[3]];
                (if be { i32::from_be_bytes(b) } else { i32::from_le_bytes(b) }) as i64
            })
            .collect(),
        _ => raw
            .chunks_exact(8)
            .map(|b| {
                let b: [u8; 8] = b.try_into().expect("8-byte chunk");
                if be {
                    i64::from_be_bytes(b)
                } else {
                    i64::from_le_bytes(b)
                }
            })
            .collect(),
    }
}

fn decode_floats(raw: &[u8], dtype: &Dtype) -> Vec<f64> {
    let scalar = dtype.scalar.unwrap_or(Scalar::F32);
    (0..raw.len() / scalar.size()).map(|i| crate::layout::load_f64(raw, i, scalar, dtype.big_endian)).collect()
}

/// Element types [`write_npy`] can store.
pub trait NpyElement: Copy {
    /// numpy descr, e.g. `<f4`.
    const DESCR: &'static str;
    /// Appends the little-endian bytes of `self`.
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! npy_element {
    ($t:ty, $d:literal) => {
        impl NpyElement for $t {
            const DESCR: &'static str = $d;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
npy_element!(f32, "<f4");
npy_element!(f64, "<f8");
npy_element!(i64, "<i8");
npy_element!(half::f16, "<f2");

/// Encodes a C-order array as `.npy` version 1.0 bytes (header padded to 64
/// bytes, as numpy writes it).
pub fn encode_npy<T: NpyElement>(shape: &[usize], data: &[T]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "shape and data disagree");
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut text = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {tuple}, }}", T::DESCR);
    while (10 + text.len() + 1) % 64 != 0 {
        text.push(' ');
    }
    text.push('\n');
    let mut out = Vec::with_capacity(10 + text.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for &v in data {
        v.put(&mut out);
    }
    out
}

/// Writes a C-order array as a `.npy` file.
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> io::Result<()> {
    std::fs::write(path, encode_npy(shape, data))
}

/// Writes a sparse frame in the preprocessing's `.npz` format (`coords`
/// int64 `(N, 3)`, `features` float32 `(N, C)`, `shape` int64 `(4,)`), deflated
/// like `numpy.savez_compressed` or stored like `numpy.savez`.
pub fn write_npz(path: &Path, frame: &SparseFrame, compressed: bool) -> io::Result<()> {
    let c = frame.shape[3];
    let coords: Vec<i64> = frame.coords.iter().flat_map(|xyz| xyz.map(i64::from)).collect();
    let features: Vec<f32> = frame.features.iter().map(|&v| v as f32).collect();
    let shape: Vec<i64> = frame.shape.iter().map(|&d| d as i64).collect();
    let method = if compressed { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    // A fixed timestamp (1980-01-01) keeps the file a function of its content.
    let options =
        zip::write::FileOptions::default().compression_method(method).last_modified_time(zip::DateTime::default());
    let mut zip = zip::ZipWriter::new(io::BufWriter::new(File::create(path)?));
    for (name, bytes) in [
        ("coords.npy", encode_npy(&[frame.len(), 3], &coords)),
        ("features.npy", encode_npy(&[frame.len(), c], &features)),
        ("shape.npy", encode_npy(&[4], &shape)),
    ] {
        zip.start_file(name, options)?;
        io::Write::write_all(&mut zip, &bytes)?;
    }
    zip.finish()?.into_inner().map_err(|e| e.into_error())?.sync_all()
}
