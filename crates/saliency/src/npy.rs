//! NumPy `.npy` files: the input images, noise draws and attribution maps users exchange with
//! Python.
//!
//! Reads format versions 1.0, 2.0 and 3.0 holding little-endian `float32` (`<f4`) or `float64`
//! (`<f8`, converted to f32) arrays in C order. The header is parsed as the small Python dict
//! literal it is, its length is bounded, the element count is computed with checked
//! multiplication and the data length is checked against the shape before anything the size of
//! the data is allocated, so a hostile header cannot make us reserve memory the file does not
//! hold. The element count is also bounded ([`MAX_NPY_ELEMENTS`] by default, any bound through
//! [`read_npy_with_limit`] / [`decode_npy_with_limit`]). Writes `<f4` in version 1.0 (2.0 for huge
//! headers), atomically.
//!
//! ```
//! use smoothgrad_autodiff::Tensor;
//! use smoothgrad_saliency::npy::{decode_npy, encode_npy};
//!
//! let t = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 3.5, 0.0, 1.0], &[1, 2, 3])?;
//! let bytes = encode_npy(&t);
//! assert_eq!(&bytes[..6], b"\x93NUMPY");
//! assert_eq!(decode_npy(&bytes)?, t);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(clippy::indexing_slicing)]

use crate::error::{Result, SaliencyError};
use smoothgrad_autodiff::Tensor;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header read, in bytes. NumPy itself refuses headers over 10 000 bytes unless
/// told otherwise; no float array of a sane rank comes close to this.
pub const MAX_HEADER_LEN: usize = 1 << 16;

/// The most elements [`read_npy`] and [`decode_npy`] accept: 2^28 (1 GiB of float32), far above
/// any picture or attribution map, far below what would exhaust a server's memory.
pub const MAX_NPY_ELEMENTS: u64 = 1 << 28;

/// What is wrong with a `.npy` file (the error names the file around it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NpyProblem {
    /// The magic string `\x93NUMPY` is missing.
    #[error("not a .npy file (it does not start with \\x93NUMPY)")]
    NotNpy,
    /// The file ends before its header does.
    #[error("the file ends inside its header")]
    Truncated,
    /// A format version other than 1.0, 2.0 and 3.0.
    #[error(".npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are)")]
    Version { major: u8, minor: u8 },
    /// A header length over [`MAX_HEADER_LEN`].
    #[error("the header claims {len} bytes, over the limit of {max}")]
    HeaderTooLong { len: u64, max: usize },
    /// The header is not the dict literal `{'descr': .., 'fortran_order': .., 'shape': (..)}`.
    #[error("malformed header: {0}")]
    Header(String),
    /// The array is stored column-major.
    #[error(
        "the array is stored in Fortran order; only C order is read (save np.ascontiguousarray(a))"
    )]
    FortranOrder,
    /// A big-endian dtype.
    #[error("dtype '{0}' is big-endian; only little-endian '<f4' and '<f8' are read")]
    BigEndian(String),
    /// A dtype other than float32 and float64.
    #[error("dtype '{0}' is not supported; only float32 ('<f4') and float64 ('<f8') are read")]
    Dtype(String),
    /// A shape whose element or byte count overflows.
    #[error("shape {0:?} is too large to address")]
    ShapeOverflow(Vec<u64>),
    /// The data after the header does not have the length the shape and dtype require.
    #[error("shape {shape:?} of '{dtype}' needs {expected} data bytes, the file holds {found}")]
    DataLength {
        shape: Vec<usize>,
        dtype: String,
        expected: u64,
        found: u64,
    },
    /// A shape with more elements than the reader's limit (checked before reading the data).
    #[error("shape {shape:?} holds {elements} elements, over the limit of {max}")]
    TooLarge {
        shape: Vec<usize>,
        elements: u64,
        max: u64,
    },
    /// A float64 value too large for float32.
    #[error("float64 value {value} at element {index} is outside the float32 range")]
    OutOfRange { value: f64, index: usize },
}

/// Reads a `.npy` file of float32 or float64 values into a float32 tensor of its shape, of at
/// most [`MAX_NPY_ELEMENTS`] elements.
pub fn read_npy(path: &Path) -> Result<Tensor<f32>> {
    read_npy_with_limit(path, MAX_NPY_ELEMENTS)
}

/// [`read_npy`] for arrays of at most `max_elements` elements; a larger declared shape is
/// [`NpyProblem::TooLarge`] before any data is read.
pub fn read_npy_with_limit(path: &Path, max_elements: u64) -> Result<Tensor<f32>> {
    let io = |source| SaliencyError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    read_from(std::io::BufReader::new(file), len, max_elements)
        .map_err(|e| e.into_error(path))
        .and_then(|(data, dims)| Tensor::from_vec(data, &dims).map_err(SaliencyError::from))
}

/// Decodes the bytes of a `.npy` file (see [`read_npy`]).
pub fn decode_npy(bytes: &[u8]) -> std::result::Result<Tensor<f32>, NpyProblem> {
    decode_npy_with_limit(bytes, MAX_NPY_ELEMENTS)
}

/// [`decode_npy`] for arrays of at most `max_elements` elements.
pub fn decode_npy_with_limit(
    bytes: &[u8],
    max_elements: u64,
) -> std::result::Result<Tensor<f32>, NpyProblem> {
    let (data, dims) = read_from(bytes, bytes.len() as u64, max_elements).map_err(|e| match e {
        ReadError::Problem(p) => p,
        // A byte slice only fails to read past its end.
        ReadError::Io(_) => NpyProblem::Truncated,
    })?;
    // The shape was checked against the data, so the only failure left is an overflow.
    Tensor::from_vec(data, &dims)
        .map_err(|_| NpyProblem::ShapeOverflow(dims.iter().map(|&d| d as u64).collect()))
}

/// Writes `tensor` as a `<f4` `.npy` file, atomically: into a temporary file in the same
/// directory, then renamed over `path`, so readers never see half a file.
pub fn write_npy(path: &Path, tensor: &Tensor<f32>) -> Result<()> {
    let bytes = encode_npy(tensor);
    write_atomically(path, |w| w.write_all(&bytes))
}

/// The bytes of a `<f4` `.npy` file holding `tensor`.
pub fn encode_npy(tensor: &Tensor<f32>) -> Vec<u8> {
    let dims = tensor.dims();
    let shape = match dims {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Version 1.0 stores the header length in 2 bytes; the data starts 64-byte aligned.
    let prefix = if header.len() + 11 <= u16::MAX as usize {
        10
    } else {
        12
    };
    let total = (prefix + header.len() + 1).div_ceil(64) * 64;
    header.extend(std::iter::repeat_n(' ', total - prefix - header.len() - 1));
    header.push('\n');
    let mut out = Vec::with_capacity(total + 4 * tensor.numel());
    out.extend_from_slice(MAGIC);
    if prefix == 10 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    for v in tensor.as_slice() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a file atomically: `write` fills a temporary file in `path`'s directory, which is
/// flushed, synced and renamed over `path`. On any failure the temporary file is removed and
/// `path` is left as it was.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    let io = |source| SaliencyError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    {
        let mut w = BufWriter::new(temp.as_file());
        write(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
    }
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// A failure while reading: a problem with the contents, or with the reading itself.
enum ReadError {
    Problem(NpyProblem),
    Io(std::io::Error),
}

impl ReadError {
    fn into_error(self, path: &Path) -> SaliencyError {
        match self {
            ReadError::Problem(problem) => SaliencyError::Npy {
                path: path.to_path_buf(),
                problem,
            },
            ReadError::Io(source) => SaliencyError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

impl From<NpyProblem> for ReadError {
    fn from(p: NpyProblem) -> Self {
        ReadError::Problem(p)
    }
}

/// Reads exactly `buf.len()` bytes, a short read being a truncated header.
fn read_header_bytes(r: &mut impl Read, buf: &mut [u8]) -> std::result::Result<(), ReadError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ReadError::Problem(NpyProblem::Truncated),
        _ => ReadError::Io(e),
    })
}

/// Element type of the data.
#[derive(Clone, Copy)]
enum Dtype {
    F32,
    F64,
}

/// Reads a whole `.npy` stream of `total_len` bytes into values and dims.
fn read_from(
    mut r: impl Read,
    total_len: u64,
    max_elements: u64,
) -> std::result::Result<(Vec<f32>, Vec<usize>), ReadError> {
    let mut magic = [0u8; 6];
    let mut version = [0u8; 2];
    read_header_bytes(&mut r, &mut magic)
        .and_then(|()| read_header_bytes(&mut r, &mut version))
        .map_err(|e| match e {
            // A file shorter than the magic string is simply not a .npy file.
            ReadError::Problem(NpyProblem::Truncated) => ReadError::Problem(NpyProblem::NotNpy),
            e => e,
        })?;
    if &magic != MAGIC {
        return Err(NpyProblem::NotNpy.into());
    }
    let [major, minor] = version;
    let (header_len, prefix_len) = match (major, minor) {
        (1, 0) => {
            let mut b = [0u8; 2];
            read_header_bytes(&mut r, &mut b)?;
            (u64::from(u16::from_le_bytes(b)), 10u64)
        }
        (2, 0) | (3, 0) => {
            let mut b = [0u8; 4];
            read_header_bytes(&mut r, &mut b)?;
            (u64::from(u32::from_le_bytes(b)), 12u64)
        }
        _ => return Err(NpyProblem::Version { major, minor }.into()),
    };
    if header_len > MAX_HEADER_LEN as u64 {
        return Err(NpyProblem::HeaderTooLong {
            len: header_len,
            max: MAX_HEADER_LEN,
        }
        .into());
    }
    if prefix_len + header_len > total_len {
        return Err(NpyProblem::Truncated.into());
    }
    let mut header = vec![0u8; header_len as usize];
    read_header_bytes(&mut r, &mut header)?;
    let header = std::str::from_utf8(&header)
        .map_err(|_| NpyProblem::Header("the header is not UTF-8 text".into()))?;
    let (dtype, descr, dims) = parse_header(header)?;

    let dims64: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
    let itemsize: u64 = match dtype {
        Dtype::F32 => 4,
        Dtype::F64 => 8,
    };
    let expected = dims64
        .iter()
        .try_fold(itemsize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| NpyProblem::ShapeOverflow(dims64.clone()))?;
    let found = total_len - prefix_len - header_len;
    if expected != found {
        return Err(NpyProblem::DataLength {
            shape: dims,
            dtype: descr,
            expected,
            found,
        }
        .into());
    }
    let elements = expected / itemsize;
    if elements > max_elements {
        return Err(NpyProblem::TooLarge {
            shape: dims,
            elements,
            max: max_elements,
        }
        .into());
    }
    let count = usize::try_from(elements).map_err(|_| NpyProblem::ShapeOverflow(dims64.clone()))?;
    let mut raw =
        vec![0u8; usize::try_from(expected).map_err(|_| NpyProblem::ShapeOverflow(dims64))?];
    r.read_exact(&mut raw).map_err(ReadError::Io)?;
    let data = match dtype {
        Dtype::F32 => raw
            .as_chunks::<4>()
            .0
            .iter()
            .map(|b| f32::from_le_bytes(*b))
            .collect(),
        Dtype::F64 => {
            let mut out = Vec::with_capacity(count);
            for (index, b) in raw.as_chunks::<8>().0.iter().enumerate() {
                let value = f64::from_le_bytes(*b);
                let v = value as f32;
                if value.is_finite() && !v.is_finite() {
                    return Err(NpyProblem::OutOfRange { value, index }.into());
                }
                out.push(v);
            }
            out
        }
    };
    Ok((data, dims))
}

/// A value of the header dict.
#[derive(Debug, PartialEq)]
enum Literal {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

/// Parses `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` (any key order,
/// either quote, optional trailing comma, trailing spaces and newline).
fn parse_header(text: &str) -> std::result::Result<(Dtype, String, Vec<usize>), NpyProblem> {
    let bad = |m: &str| NpyProblem::Header(m.to_string());
    let mut p = Parser {
        s: text.trim_end().as_bytes(),
        i: 0,
    };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.skip_spaces();
        if p.eat(b'}') {
            break;
        }
        let key = p.string()?;
        p.skip_spaces();
        p.expect(b':')?;
        let value = p.literal()?;
        let slot_taken = match key.as_str() {
            "descr" => descr.replace(value).is_some(),
            "fortran_order" => fortran.replace(value).is_some(),
            "shape" => shape.replace(value).is_some(),
            other => return Err(bad(&format!("unexpected key '{other}'"))),
        };
        if slot_taken {
            return Err(bad(&format!("key '{key}' appears twice")));
        }
        p.skip_spaces();
        if !p.eat(b',') {
            p.skip_spaces();
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_spaces();
    if p.i != p.s.len() {
        return Err(bad("text after the closing '}'"));
    }
    let descr = match descr {
        Some(Literal::Str(s)) => s,
        Some(_) => return Err(NpyProblem::Dtype("a structured dtype".into())),
        None => return Err(bad("the key 'descr' is missing")),
    };
    match fortran {
        Some(Literal::Bool(false)) => {}
        Some(Literal::Bool(true)) => return Err(NpyProblem::FortranOrder),
        Some(_) => return Err(bad("'fortran_order' must be True or False")),
        None => return Err(bad("the key 'fortran_order' is missing")),
    }
    let dims = match shape {
        Some(Literal::Tuple(d)) => d,
        Some(_) => return Err(bad("'shape' must be a tuple of integers")),
        None => return Err(bad("the key 'shape' is missing")),
    };
    let dtype = match descr.as_str() {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        d if d.starts_with('>') => return Err(NpyProblem::BigEndian(descr)),
        _ => return Err(NpyProblem::Dtype(descr)),
    };
    Ok((dtype, descr, dims))
}

/// A cursor over the header text.
struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), NpyProblem> {
        if self.eat(c) {
            return Ok(());
        }
        let found = match self.peek() {
            Some(b) => format!("'{}'", char::from(b).escape_default()),
            None => "the end".into(),
        };
        Err(NpyProblem::Header(format!(
            "expected '{}' at byte {}, found {found}",
            char::from(c),
            self.i
        )))
    }

    /// A single- or double-quoted string without escapes.
    fn string(&mut self) -> std::result::Result<String, NpyProblem> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(NpyProblem::Header(format!(
                    "expected a quoted key or string at byte {}",
                    self.i
                )));
            }
        };
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == quote {
                let s = self.s.get(start..self.i).unwrap_or_default();
                self.i += 1;
                return String::from_utf8(s.to_vec())
                    .map_err(|_| NpyProblem::Header("a string is not UTF-8".into()));
            }
            if c == b'\\' {
                return Err(NpyProblem::Header("escapes in strings are not read".into()));
            }
            self.i += 1;
        }
        Err(NpyProblem::Header("a string is not closed".into()))
    }

    fn literal(&mut self) -> std::result::Result<Literal, NpyProblem> {
        self.skip_spaces();
        let rest = self.s.get(self.i..).unwrap_or_default();
        if rest.starts_with(b"True") {
            self.i += 4;
            return Ok(Literal::Bool(true));
        }
        if rest.starts_with(b"False") {
            self.i += 5;
            return Ok(Literal::Bool(false));
        }
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Literal::Str),
            Some(b'(') => self.tuple().map(Literal::Tuple),
            Some(b'[') => Err(NpyProblem::Dtype("a structured dtype".into())),
            _ => Err(NpyProblem::Header(format!(
                "unexpected value at byte {}",
                self.i
            ))),
        }
    }

    /// `()`, `(3,)`, `(3, 4)`, `(3, 4,)`: non-negative integers (Python 2's `L` suffix allowed).
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, NpyProblem> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let digits = self
                .s
                .get(start..self.i)
                .and_then(|d| std::str::from_utf8(d).ok())
                .unwrap_or_default();
            if digits.is_empty() {
                return Err(NpyProblem::Header(format!(
                    "expected a non-negative integer in 'shape' at byte {}",
                    self.i
                )));
            }
            let d: usize = digits.parse().map_err(|_| {
                NpyProblem::ShapeOverflow(vec![digits.parse::<u64>().unwrap_or(u64::MAX)])
            })?;
            dims.push(d);
            self.eat(b'L');
            self.skip_spaces();
            if !self.eat(b',') {
                self.skip_spaces();
                self.expect(b')')?;
                // `(3)` is an int in Python, not a tuple.
                if dims.len() == 1 {
                    return Err(NpyProblem::Header(
                        "'shape' must be a tuple: write (n,) for one dimension".into(),
                    ));
                }
                return Ok(dims);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `header` (padded to 64 bytes, newline added) and `data` bytes, version 1.0.
    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn round_trip_keeps_values_and_shapes() {
        for dims in [vec![3, 2, 4], vec![5], vec![1, 1, 2, 2], vec![0, 3], vec![]] {
            let n = dims.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 1.0).collect();
            let t = Tensor::from_vec(data, &dims).unwrap();
            let bytes = encode_npy(&t);
            assert_eq!(bytes.len() % 64, (4 * n) % 64, "data is 64-byte aligned");
            assert_eq!(decode_npy(&bytes).unwrap(), t, "dims {dims:?}");
        }
    }

    #[test]
    fn writes_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map.npy");
        let t = Tensor::from_vec(vec![1.5f32, f32::MIN_POSITIVE, -0.0, 7.0], &[2, 2]).unwrap();
        write_npy(&path, &t).unwrap();
        assert_eq!(read_npy(&path).unwrap(), t);
        // Only the final file is left: the temporary one was renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("no-such-dir").join("map.npy");
        assert!(matches!(
            write_npy(&missing, &t),
            Err(SaliencyError::Io {
                action: "write",
                ..
            })
        ));
    }

    #[test]
    fn reads_what_numpy_writes() {
        // np.save of np.arange(6, dtype='<f8').reshape(2, 3) (header spacing as NumPy 2 writes).
        let data: Vec<u8> = (0..6).flat_map(|i| (i as f64).to_le_bytes()).collect();
        let bytes = npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            &data,
        );
        let t = decode_npy(&bytes).unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        assert_eq!(t.as_slice(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // Versions 2.0 and 3.0 differ only in a 4-byte header length.
        for major in [2u8, 3] {
            let h = "{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<f4\"}\n";
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[major, 0]);
            b.extend_from_slice(&(h.len() as u32).to_le_bytes());
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&f32s(&[1.0, 2.0]));
            assert_eq!(decode_npy(&b).unwrap().as_slice(), &[1.0, 2.0]);
        }
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let d4 = f32s(&[0.0; 4]);
        let cases: Vec<(Vec<u8>, NpyProblem)> = vec![
            (b"PK\x03\x04 not numpy".to_vec(), NpyProblem::NotNpy),
            (b"\x93NUM".to_vec(), NpyProblem::NotNpy),
            (b"\x93NUMPY\x01\x00\x40".to_vec(), NpyProblem::Truncated),
            (
                b"\x93NUMPY\x04\x00\x10\x00".to_vec(),
                NpyProblem::Version { major: 4, minor: 0 },
            ),
            (
                [&MAGIC[..], &[2, 0], &u32::MAX.to_le_bytes()].concat(),
                NpyProblem::HeaderTooLong {
                    len: u32::MAX as u64,
                    max: MAX_HEADER_LEN,
                },
            ),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                    &d4,
                ),
                NpyProblem::FortranOrder,
            ),
            (
                npy(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }",
                    &d4,
                ),
                NpyProblem::BigEndian(">f4".into()),
            ),
            (
                npy(
                    "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                    &d4,
                ),
                NpyProblem::Dtype("<i4".into()),
            ),
            (
                npy(
                    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }",
                    &d4,
                ),
                NpyProblem::Dtype("a structured dtype".into()),
            ),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                    &d4,
                ),
                NpyProblem::DataLength {
                    shape: vec![2, 3],
                    dtype: "<f4".into(),
                    expected: 24,
                    found: 16,
                },
            ),
            (
                npy(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4), }",
                    &d4,
                ),
                NpyProblem::ShapeOverflow(vec![1 << 32, 1 << 32, 4]),
            ),
            (
                npy(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                    &1e300f64.to_le_bytes(),
                ),
                NpyProblem::OutOfRange {
                    value: 1e300,
                    index: 0,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_npy(&bytes).unwrap_err(), want);
        }
    }

    #[test]
    fn malformed_dict_literals_are_header_errors() {
        let d4 = f32s(&[0.0; 4]);
        for header in [
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}",
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), } trailing",
            "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 2)}",
            "{'descr': '<f4, 'fortran_order': False, 'shape': (2, 2)}",
            "['descr', '<f4']",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)",
        ] {
            let err = decode_npy(&npy(header, &d4)).unwrap_err();
            assert!(matches!(err, NpyProblem::Header(_)), "{header}: {err:?}");
        }
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fortran.npy");
        let header = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }";
        std::fs::write(&path, npy(header, &f32s(&[1.0]))).unwrap();
        let msg = read_npy(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("Fortran order"), "{msg}");
        let missing = read_npy(&dir.path().join("missing.npy")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read "), "{missing}");
    }
}
