//! Device-side values: f32 tensors, 1-bit masks and u32 index maps, each an owned storage
//! buffer taken from the context's pool and given back to it on drop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Usage of every pooled buffer: bound as storage, and source or target of copies and clears.
pub(crate) const POOLED_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Storage buffers kept for reuse, keyed by size class.
///
/// Reuse is safe without waiting for the device: every use of a buffer is a command recorded in
/// queue order (uploads make new buffers instead of writing into pooled ones), so a buffer given
/// back while a recorded kernel still reads it is only written by kernels recorded later.
pub(crate) struct BufferPool {
    free: Mutex<PoolState>,
    /// Most bytes kept idle; buffers given back past this are released.
    capacity: u64,
}

#[derive(Default)]
struct PoolState {
    by_class: HashMap<u64, Vec<wgpu::Buffer>>,
    idle_bytes: u64,
    /// Buffers handed out from the pool rather than created (for tests and tuning).
    reused: u64,
}

impl BufferPool {
    pub(crate) fn new(capacity: u64) -> Self {
        BufferPool {
            free: Mutex::new(PoolState::default()),
            capacity,
        }
    }

    /// The size a request for `bytes` is rounded up to: at least 256, then the next of
    /// 1, 1.25, 1.5, 1.75 times a power of two (at most 25% waste).
    pub(crate) fn size_class(bytes: u64) -> u64 {
        let bytes = bytes.max(256);
        let top = 63 - bytes.leading_zeros() as u64;
        let step = 1u64 << (top - 2);
        bytes.div_ceil(step) * step
    }

    /// A free buffer of class `class`, if one is idle.
    pub(crate) fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        let mut state = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let buffer = state.by_class.get_mut(&class)?.pop()?;
        state.idle_bytes -= class;
        state.reused += 1;
        Some(buffer)
    }

    fn give_back(&self, class: u64, buffer: wgpu::Buffer) {
        let mut state = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if state.idle_bytes + class <= self.capacity {
            state.idle_bytes += class;
            state.by_class.entry(class).or_default().push(buffer);
        }
    }

    /// Releases every idle buffer.
    pub(crate) fn clear(&self) {
        let mut state = self.free.lock().unwrap_or_else(|e| e.into_inner());
        state.by_class.clear();
        state.idle_bytes = 0;
    }

    /// (idle bytes, buffers reused so far).
    pub(crate) fn stats(&self) -> (u64, u64) {
        let state = self.free.lock().unwrap_or_else(|e| e.into_inner());
        (state.idle_bytes, state.reused)
    }
}

/// A storage buffer of one size class that returns to its pool when dropped.
pub(crate) struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, class: u64, pool: Arc<BufferPool>) -> Self {
        PooledBuffer {
            buffer: Some(buffer),
            class,
            pool,
        }
    }

    // justified: `buffer` is `Some` from construction until `Drop` takes it back to the pool.
    #[allow(clippy::expect_used)]
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.pool.give_back(self.class, buffer);
        }
    }
}

/// How a tensor's values are stored on the device. Kernels always compute in f32; with
/// [`F16Storage`](Precision::F16Storage) they load f16 values, widen them, and round their results
/// to f16 when they store them (half the memory traffic and footprint of activations and
/// weights). Needs the adapter's `SHADER_F16` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit floats (default).
    #[default]
    F32,
    /// IEEE binary16 storage, f32 arithmetic.
    F16Storage,
}

impl Precision {
    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16Storage => 2,
        }
    }

    /// The name used in messages and on the command line (`f32`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16Storage => "f16",
        }
    }
}

/// A tensor on the device: a storage buffer holding `numel` values (f32, or f16 under
/// [`Precision::F16Storage`]), row-major (NCHW for images, OIHW for weights), and its dimensions.
///
/// Not `Clone`: kernels such as
/// [`reduce_copies`](super::WgpuContext::reduce_copies) add into a tensor in place.
pub struct GpuTensor {
    pub(crate) buffer: PooledBuffer,
    dims: Vec<usize>,
    numel: usize,
    precision: Precision,
}

impl GpuTensor {
    pub(crate) fn new(buffer: PooledBuffer, dims: &[usize], precision: Precision) -> Self {
        GpuTensor {
            buffer,
            dims: dims.to_vec(),
            numel: dims.iter().product(),
            precision,
        }
    }

    /// How the values are stored.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes the values occupy (padded to whole 4-byte words, the unit of device copies).
    pub(crate) fn bytes(&self) -> u64 {
        (self.numel as u64 * self.precision.bytes() as u64).next_multiple_of(4)
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// The same values under other dimensions with the same element count (no copy).
    pub fn reshape(self, dims: &[usize]) -> crate::Result<Self> {
        if dims.iter().product::<usize>() != self.numel {
            return Err(crate::Error::ShapeMismatch {
                op: "reshape",
                lhs: self.dims,
                rhs: dims.to_vec(),
            });
        }
        Ok(GpuTensor {
            dims: dims.to_vec(),
            ..self
        })
    }

    // justified: `buffer` is `Some` from construction until `Drop` takes it back to the pool.
    #[allow(clippy::expect_used)]
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.raw()
    }
}

impl std::fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.precision {
            Precision::F32 => write!(f, "GpuTensor{:?}", self.dims),
            p => write!(f, "GpuTensor{:?}({})", self.dims, p.name()),
        }
    }
}

/// One bit per element on the device, in u32 words: bit `e % 32` of word `e / 32` belongs to
/// element `e` (ReLU: set where the forward input was strictly positive). On a little-endian
/// host these are the bits of the CPU's `BitMask`, whose u64 words are pairs of these.
pub struct GpuMask {
    pub(crate) buffer: PooledBuffer,
    len: usize,
}

impl GpuMask {
    pub(crate) fn new(buffer: PooledBuffer, len: usize) -> Self {
        GpuMask { buffer, len }
    }

    /// Number of elements covered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask covers no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of u32 words.
    pub fn words(&self) -> usize {
        self.len.div_ceil(32)
    }

    // justified: `buffer` is `Some` from construction until `Drop` takes it back to the pool.
    #[allow(clippy::expect_used)]
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.raw()
    }
}

impl std::fmt::Debug for GpuMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuMask[{}]", self.len)
    }
}

/// u32 values on the device with dimensions: max-pool argmax (index inside the input plane,
/// `u32::MAX` for a window with no input element).
pub struct GpuIndices {
    pub(crate) buffer: PooledBuffer,
    dims: Vec<usize>,
    numel: usize,
}

impl GpuIndices {
    pub(crate) fn new(buffer: PooledBuffer, dims: &[usize]) -> Self {
        GpuIndices {
            buffer,
            dims: dims.to_vec(),
            numel: dims.iter().product(),
        }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The number of values.
    pub fn numel(&self) -> usize {
        self.numel
    }

    // justified: `buffer` is `Some` from construction until `Drop` takes it back to the pool.
    #[allow(clippy::expect_used)]
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        self.buffer.raw()
    }
}

impl std::fmt::Debug for GpuIndices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuIndices{:?}", self.dims)
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn size_classes_round_up_by_at_most_a_quarter() {
        assert_eq!(BufferPool::size_class(0), 256);
        assert_eq!(BufferPool::size_class(256), 256);
        assert_eq!(BufferPool::size_class(257), 320);
        assert_eq!(BufferPool::size_class(1000), 1024);
        assert_eq!(BufferPool::size_class(1025), 1280);
        for bytes in [300u64, 4097, 1 << 20, 3 << 27, 1_000_003] {
            let class = BufferPool::size_class(bytes);
            assert!(
                class >= bytes && (class - bytes) * 4 <= bytes,
                "{bytes} -> {class}"
            );
            assert_eq!(BufferPool::size_class(class), class);
        }
    }
}
