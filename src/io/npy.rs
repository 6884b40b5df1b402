//! NumPy `.npy` arrays: headers (parsed once, kept as a small `Clone + Send`
//! struct), element access for every numeric dtype numpy writes (both byte
//! orders), C and Fortran element order, memory maps, and a writer.
//! Nothing here knows about voxel grids.

use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use memmap2::Mmap;
use npyz::{Endianness, TypeChar, TypeStr};

use super::{open_regular, FormatError, Source};

/// numpy refuses headers longer than this by default (`max_header_size`).
const MAX_HEADER_LEN: usize = 10_000;

/// Element types the reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// IEEE half precision (`f2`).
    F16,
    /// IEEE single precision (`f4`).
    F32,
    /// IEEE double precision (`f8`).
    F64,
    /// Signed integer of this many bytes (`i1`, `i2`, `i4`, `i8`).
    Int(u8),
    /// Unsigned integer of this many bytes (`u1`, `u2`, `u4`, `u8`).
    UInt(u8),
}

impl Scalar {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Scalar::F16 => 2,
            Scalar::F32 => 4,
            Scalar::F64 => 8,
            Scalar::Int(n) | Scalar::UInt(n) => n as usize,
        }
    }

    /// A floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Scalar::F16 | Scalar::F32 | Scalar::F64)
    }

    /// An integer type (signed or unsigned).
    pub fn is_int(self) -> bool {
        !self.is_float()
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

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.descr)
    }
}

impl Dtype {
    /// Parses numpy's type string (`<f4`, `>i2`, `|u1`, ...).
    pub fn parse(descr: &str) -> Option<Dtype> {
        let ts = TypeStr::from_str(descr).ok()?;
        let n = ts.size_field();
        let scalar = match ts.type_char() {
            TypeChar::Float if matches!(n, 2 | 4 | 8) => Some(match n {
                2 => Scalar::F16,
                4 => Scalar::F32,
                _ => Scalar::F64,
            }),
            TypeChar::Int if matches!(n, 1 | 2 | 4 | 8) => Some(Scalar::Int(n as u8)),
            TypeChar::Uint if matches!(n, 1 | 2 | 4 | 8) => Some(Scalar::UInt(n as u8)),
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
    /// Array shape (empty for a 0-d array).
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
    pub fn read(mut r: impl Read, src: &Source) -> Result<NpyHeader, FormatError> {
        let bad = |reason: String| FormatError::Header { src: src.clone(), reason };
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
    pub fn read_file(path: &Path) -> Result<NpyHeader, FormatError> {
        let file = open_regular(path)?;
        NpyHeader::read(io::BufReader::with_capacity(4096, file), &Source::file(path))
    }

    /// The scalar type, if `accept` allows it; otherwise an error naming
    /// the dtype found and `expected`.
    pub fn expect_scalar(
        &self,
        src: &Source,
        accept: impl Fn(Scalar) -> bool,
        expected: &'static str,
    ) -> Result<Scalar, FormatError> {
        match self.dtype.scalar {
            Some(s) if accept(s) => Ok(s),
            _ => Err(FormatError::Dtype { src: src.clone(), dtype: self.dtype.descr.clone(), expected }),
        }
    }

    /// Storage position of the element at C-order (row-major) flat index
    /// `i`: `i` itself for C order, the column-major position for Fortran
    /// order.
    pub fn storage_index(&self, mut i: usize) -> usize {
        if !self.fortran_order || self.shape.len() < 2 {
            return i;
        }
        // C order: the last dim varies fastest; Fortran order: the first.
        let mut stride = self.len().unwrap_or(0);
        let mut pos = 0;
        for &d in self.shape.iter().rev() {
            stride /= d.max(1);
            pos += (i % d.max(1)) * stride;
            i /= d.max(1);
        }
        pos
    }

    /// All elements as f64 in C order (any numeric dtype; `raw` holds
    /// exactly [`NpyHeader::data_bytes`]).
    pub fn c_order_f64(&self, raw: &[u8]) -> Vec<f64> {
        let (s, be) = (self.dtype.scalar.unwrap_or(Scalar::F32), self.dtype.big_endian);
        (0..raw.len() / s.size()).map(|i| load_f64(raw, self.storage_index(i), s, be)).collect()
    }

    /// All elements as i64 in C order (integer dtypes); `Err(i)` names the
    /// first element (C order) that an i64 cannot hold (a `u8` above 2^63).
    pub fn c_order_i64(&self, raw: &[u8]) -> Result<Vec<i64>, usize> {
        let (s, be) = (self.dtype.scalar.unwrap_or(Scalar::Int(8)), self.dtype.big_endian);
        (0..raw.len() / s.size()).map(|i| load_i64(raw, self.storage_index(i), s, be).ok_or(i)).collect()
    }
}

fn read_exact_or(
    r: &mut impl Read,
    buf: &mut [u8],
    src: &Source,
    on_eof: impl FnOnce() -> FormatError,
) -> Result<(), FormatError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => on_eof(),
        _ => FormatError::Io { src: src.clone(), source: e },
    })
}

fn bytes_of<const N: usize>(raw: &[u8], i: usize, big_endian: bool) -> [u8; N] {
    let mut b: [u8; N] = raw[i * N..(i + 1) * N].try_into().expect("element width");
    if big_endian != cfg!(target_endian = "big") {
        b.reverse();
    }
    b
}

/// Element `i` (storage order) of a buffer as f64: exact for every float
/// type and for integers up to 2^53.
pub fn load_f64(raw: &[u8], i: usize, scalar: Scalar, big_endian: bool) -> f64 {
    match scalar {
        Scalar::F16 => half::f16::from_bits(u16::from_ne_bytes(bytes_of(raw, i, big_endian))).to_f64(),
        Scalar::F32 => f32::from_ne_bytes(bytes_of(raw, i, big_endian)) as f64,
        Scalar::F64 => f64::from_ne_bytes(bytes_of(raw, i, big_endian)),
        _ => load_i128(raw, i, scalar, big_endian).map_or(f64::NAN, |v| v as f64),
    }
}

/// Element `i` (storage order) of an integer buffer as i64; `None` for a
/// float type or an unsigned value above `i64::MAX`.
pub fn load_i64(raw: &[u8], i: usize, scalar: Scalar, big_endian: bool) -> Option<i64> {
    load_i128(raw, i, scalar, big_endian).and_then(|v| i64::try_from(v).ok())
}

fn load_i128(raw: &[u8], i: usize, scalar: Scalar, be: bool) -> Option<i128> {
    Some(match scalar {
        Scalar::Int(1) => i8::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::Int(2) => i16::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::Int(4) => i32::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::Int(8) => i64::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::UInt(1) => u8::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::UInt(2) => u16::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::UInt(4) => u32::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        Scalar::UInt(8) => u64::from_ne_bytes(bytes_of(raw, i, be)) as i128,
        _ => return None,
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

/// A memory-mapped `.npy` file whose length was checked against its header.
pub struct MappedNpy {
    mmap: Mmap,
    /// Its header.
    pub header: NpyHeader,
}

impl MappedNpy {
    /// Maps `path` read-only, expecting `header` (parsed earlier, e.g. when a
    /// dataset was opened): the file's length must still match it.
    pub fn map(path: &Path, header: &NpyHeader) -> Result<MappedNpy, FormatError> {
        let file = open_regular(path)?;
        let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        check_len(path, header, len)?;
        // SAFETY: the map is read-only and private to this reader. Input
        // files are not truncated while they are read; the length was
        // checked against the header just above, so every index the
        // decoders compute lies inside the mapping.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        Ok(MappedNpy { mmap, header: header.clone() })
    }

    /// Parses the header of `path`, then maps it.
    pub fn open(path: &Path) -> Result<MappedNpy, FormatError> {
        let header = NpyHeader::read_file(path)?;
        header.expect_scalar(&Source::file(path), |_| true, "a numeric dtype")?;
        MappedNpy::map(path, &header)
    }

    /// Element bytes (after the header).
    pub fn data(&self) -> &[u8] {
        &self.mmap[self.header.offset..]
    }
}

/// Refuses a file whose length differs from what its header implies.
pub fn check_len(path: &Path, header: &NpyHeader, actual: u64) -> Result<(), FormatError> {
    let data = header.data_bytes().map_or(u64::MAX, |b| b as u64);
    let expected = (header.offset as u64).saturating_add(data);
    if actual != expected {
        return Err(FormatError::Truncated { src: Source::file(path), expected, actual });
    }
    Ok(())
}

/// Element types [`encode_npy`] can store.
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
    let mut out = Vec::with_capacity(10 + text.len() + std::mem::size_of_val(data));
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    for &v in data {
        v.put(&mut out);
    }
    out
}

/// Writes a C-order array as a `.npy` file, atomically.
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> io::Result<()> {
    super::write_atomic(path, &encode_npy(shape, data))
}

/// Reads a whole `.npy` file: header and element bytes.
pub fn read_npy(path: &Path) -> Result<(NpyHeader, Vec<u8>), FormatError> {
    let src = Source::file(path);
    let mut file = io::BufReader::new(open_regular(path)?);
    let header = NpyHeader::read(&mut file, &src)?;
    header.expect_scalar(&src, |_| true, "a numeric dtype")?;
    let want = header.data_bytes().unwrap_or(usize::MAX) as u64;
    let mut raw = Vec::new();
    (&mut file).take(want).read_to_end(&mut raw).map_err(|source| FormatError::Io { src: src.clone(), source })?;
    let mut rest = [0u8; 1];
    let trailing = file.read(&mut rest).map_err(|source| FormatError::Io { src: src.clone(), source })?;
    if raw.len() as u64 != want || trailing != 0 {
        return Err(FormatError::Truncated { src, expected: want, actual: raw.len() as u64 + trailing as u64 });
    }
    Ok((header, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(shape: &[usize], descr: &str, fortran: bool) -> NpyHeader {
        NpyHeader { offset: 0, shape: shape.to_vec(), dtype: Dtype::parse(descr).unwrap(), fortran_order: fortran }
    }

    #[test]
    fn fortran_storage_index_is_column_major() {
        // (2, 3) in Fortran order stores [a00 a10 a01 a11 a02 a12]
        let h = header(&[2, 3], "<i8", true);
        let got: Vec<usize> = (0..6).map(|i| h.storage_index(i)).collect();
        assert_eq!(got, [0, 2, 4, 1, 3, 5]);
        let h3 = header(&[2, 3, 4], "<f4", true);
        // C index of (1, 2, 3) = 1*12 + 2*4 + 3 = 23; Fortran offset = 1 + 2*2 + 3*6 = 23
        assert_eq!(h3.storage_index(23), 23);
        // (0, 1, 0): C index 4, Fortran offset 2
        assert_eq!(h3.storage_index(4), 2);
        assert_eq!(header(&[5], "<i8", true).storage_index(3), 3);
    }

    #[test]
    fn every_integer_width_and_order_decodes() {
        for (descr, bytes, want) in [
            ("|i1", vec![0xffu8], -1i64),
            ("|u1", vec![0xff], 255),
            ("<i2", vec![0xfe, 0xff], -2),
            (">i2", vec![0xff, 0xfe], -2),
            ("<u2", vec![0x01, 0x02], 0x0201),
            (">u4", vec![0, 0, 1, 0], 256),
            ("<i8", (-7i64).to_le_bytes().to_vec(), -7),
            (">u8", 9u64.to_be_bytes().to_vec(), 9),
        ] {
            let d = Dtype::parse(descr).unwrap();
            let s = d.scalar.unwrap();
            assert_eq!(load_i64(&bytes, 0, s, d.big_endian), Some(want), "{descr}");
            assert_eq!(load_f64(&bytes, 0, s, d.big_endian), want as f64, "{descr}");
        }
        let big = u64::MAX.to_le_bytes();
        assert_eq!(load_i64(&big, 0, Scalar::UInt(8), false), None, "beyond i64");
        assert_eq!(Dtype::parse("<c8").unwrap().scalar, None, "complex is not decodable");
    }
}
