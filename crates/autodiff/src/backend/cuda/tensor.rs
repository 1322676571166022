//! Device-resident values: f32 tensors, ReLU/clamp bit masks, max-pool argmax indices.

use super::{CudaContext, address};
use crate::error::Result;
use crate::ops::activation::BitMask;
use crate::shape::Shape;
use crate::tensor::Tensor;
use cudarc::driver::CudaSlice;

/// An f32 tensor in device memory: a buffer and its dimensions (row-major, as [`Tensor`]).
pub struct CudaTensor {
    pub(crate) data: CudaSlice<f32>,
    pub(crate) shape: Shape,
}

impl std::fmt::Debug for CudaTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaTensor{:?}", self.shape.dims())
    }
}

impl CudaTensor {
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    /// The same buffer under other dimensions with the same element count (no copy).
    pub fn reshape(self, dims: &[usize]) -> Result<Self> {
        let shape = Shape::new(dims)?;
        if shape.numel() != self.numel() {
            return Err(crate::error::Error::ShapeMismatch {
                op: "reshape",
                lhs: self.dims().to_vec(),
                rhs: dims.to_vec(),
            });
        }
        Ok(CudaTensor {
            data: self.data,
            shape,
        })
    }
    pub(crate) fn ptr(&self, ctx: &CudaContext) -> u64 {
        address(&self.data, ctx.stream())
    }
}

/// One bit per element of a tensor in device memory: bit `e % 32` of u32 word `e / 32` (the
/// CPU's [`BitMask`] words read as little-endian u32 pairs).
pub struct CudaMask {
    pub(crate) words: CudaSlice<u32>,
    pub(crate) len: usize,
}

impl CudaMask {
    /// Elements covered.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the mask covers no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub(crate) fn word_count(len: usize) -> usize {
        len.div_ceil(32)
    }
    pub(crate) fn ptr(&self, ctx: &CudaContext) -> u64 {
        address(&self.words, ctx.stream())
    }
}

/// Per-output indices in device memory (max pool: the argmax inside each input plane).
pub struct CudaIndices {
    pub(crate) data: CudaSlice<u32>,
    pub(crate) len: usize,
}

impl CudaIndices {
    /// Number of indices.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub(crate) fn ptr(&self, ctx: &CudaContext) -> u64 {
        address(&self.data, ctx.stream())
    }
}

impl CudaContext {
    /// Copies a host tensor to the device.
    pub fn upload(&self, t: &Tensor<f32>) -> Result<CudaTensor> {
        Ok(CudaTensor {
            data: self.upload_slice(t.as_slice())?,
            shape: t.shape().clone(),
        })
    }

    /// A device tensor from values in row-major order.
    pub fn upload_vec(&self, values: &[f32], dims: &[usize]) -> Result<CudaTensor> {
        self.upload(&Tensor::from_vec(values.to_vec(), dims)?)
    }

    /// A device tensor of zeros.
    pub fn zeros(&self, dims: &[usize]) -> Result<CudaTensor> {
        let shape = Shape::new(dims)?;
        Ok(CudaTensor {
            data: self.alloc_zeros(shape.numel())?,
            shape,
        })
    }

    /// A copy of a device tensor in a new device buffer (queued on the stream, no host trip).
    pub fn duplicate(&self, t: &CudaTensor) -> Result<CudaTensor> {
        let data = self
            .stream()
            .clone_dtod(&t.data)
            .map_err(|e| super::driver_error(&format!("copying {} elements", t.numel()), e))?;
        Ok(CudaTensor {
            data,
            shape: t.shape.clone(),
        })
    }

    /// Copies a device tensor to the host (waits for the queued work).
    pub fn download(&self, t: &CudaTensor) -> Result<Tensor<f32>> {
        let values = self.download_slice(&t.data, t.numel())?;
        Tensor::from_vec(values, t.dims())
    }

    /// The bits of a mask (waits for the queued work).
    pub fn download_mask(&self, m: &CudaMask) -> Result<Vec<bool>> {
        let words = self.download_slice(&m.words, CudaMask::word_count(m.len))?;
        Ok((0..m.len)
            .map(|e| (words[e / 32] >> (e % 32)) & 1 == 1)
            .collect())
    }

    /// Uploads a CPU mask (its u64 words as u32 pairs, low half first).
    pub fn upload_mask(&self, m: &BitMask) -> Result<CudaMask> {
        let mut words = vec![0u32; CudaMask::word_count(m.len())];
        for (e, w) in (0..m.len()).filter(|&e| m.get(e)).map(|e| (e, e / 32)) {
            words[w] |= 1 << (e % 32);
        }
        Ok(CudaMask {
            words: self.upload_slice(&words)?,
            len: m.len(),
        })
    }

    /// The indices (waits for the queued work).
    pub fn download_indices(&self, i: &CudaIndices) -> Result<Vec<u32>> {
        self.download_slice(&i.data, i.len)
    }

    /// Uploads indices (e.g. a CPU max pool's argmax).
    pub fn upload_indices(&self, values: &[u32]) -> Result<CudaIndices> {
        Ok(CudaIndices {
            data: self.upload_slice(values)?,
            len: values.len(),
        })
    }

    pub(crate) fn new_tensor(&self, shape: Shape) -> Result<CudaTensor> {
        Ok(CudaTensor {
            data: self.alloc_zeros(shape.numel())?,
            shape,
        })
    }

    pub(crate) fn new_mask(&self, len: usize) -> Result<CudaMask> {
        Ok(CudaMask {
            words: self.alloc_zeros(CudaMask::word_count(len))?,
            len,
        })
    }
}
