//! Moving values between host and device, and allocating device buffers from the pool.

use super::context::{WgpuContext, device_error, lock};
use super::tensor::{
    BufferPool, GpuIndices, GpuMask, GpuTensor, POOLED_USAGE, PooledBuffer, Precision,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

impl WgpuContext {
    /// Copies a host tensor to the device (f32 storage).
    pub fn upload(&self, t: &Tensor<f32>) -> Result<GpuTensor> {
        self.upload_slice(t.as_slice(), t.dims())
    }

    /// Copies row-major values with dimensions `dims` to the device (f32 storage).
    pub fn upload_slice(&self, data: &[f32], dims: &[usize]) -> Result<GpuTensor> {
        self.upload_slice_as(data, dims, Precision::F32)
    }

    /// Copies a host tensor to the device, stored as `precision` (f16: rounded to nearest).
    pub fn upload_as(&self, t: &Tensor<f32>, precision: Precision) -> Result<GpuTensor> {
        self.upload_slice_as(t.as_slice(), t.dims(), precision)
    }

    /// Copies row-major values with dimensions `dims` to the device, stored as `precision`.
    ///
    /// # Errors
    /// [`Error::Device`] for f16 on an adapter without `SHADER_F16`.
    pub fn upload_slice_as(
        &self,
        data: &[f32],
        dims: &[usize],
        precision: Precision,
    ) -> Result<GpuTensor> {
        check_len(dims, data.len())?;
        self.check_precision(precision)?;
        let buffer = match precision {
            Precision::F32 => self.buffer_with(bytemuck::cast_slice(data), "upload")?,
            Precision::F16Storage => {
                // Padded to whole 4-byte words, the unit of buffer copies.
                let mut bits: Vec<u16> = data
                    .iter()
                    .map(|&v| half::f16::from_f32(v).to_bits())
                    .collect();
                bits.resize(bits.len().next_multiple_of(2), 0);
                self.buffer_with(bytemuck::cast_slice(&bits), "upload")?
            }
        };
        Ok(GpuTensor::new(buffer, dims, precision))
    }

    /// A device tensor of zeros (f32 storage).
    pub fn zeros(&self, dims: &[usize]) -> Result<GpuTensor> {
        self.zeros_as(dims, Precision::F32)
    }

    /// A device tensor of zeros stored as `precision`.
    pub fn zeros_as(&self, dims: &[usize], precision: Precision) -> Result<GpuTensor> {
        let t = self.tensor_as(dims, precision)?;
        self.clear(t.raw());
        Ok(t)
    }

    /// Copies u32 values (max-pool argmax) to the device.
    pub fn upload_indices(&self, data: &[u32], dims: &[usize]) -> Result<GpuIndices> {
        check_len(dims, data.len())?;
        let buffer = self.buffer_with(bytemuck::cast_slice(data), "upload_indices")?;
        Ok(GpuIndices::new(buffer, dims))
    }

    /// Copies a bit mask of `len` elements, given as u32 words, to the device.
    pub fn upload_mask(&self, words: &[u32], len: usize) -> Result<GpuMask> {
        if words.len() != len.div_ceil(32) {
            return Err(Error::DataLength {
                shape: vec![len.div_ceil(32)],
                expected: len.div_ceil(32),
                got: words.len(),
            });
        }
        let buffer = self.buffer_with(bytemuck::cast_slice(words), "upload_mask")?;
        Ok(GpuMask::new(buffer, len))
    }

    /// Copies a device tensor back to the host as f32 (f16 values widen exactly; submits and
    /// waits).
    pub fn download(&self, t: &GpuTensor) -> Result<Tensor<f32>> {
        let data: Vec<f32> = match t.precision() {
            Precision::F32 => self.read_back(t.raw(), t.numel())?,
            Precision::F16Storage => {
                let words: Vec<u32> = self.read_back(t.raw(), t.numel().div_ceil(2))?;
                let bits: &[u16] = bytemuck::cast_slice(&words);
                bits[..t.numel()]
                    .iter()
                    .map(|&b| half::f16::from_bits(b).to_f32())
                    .collect()
            }
        };
        Tensor::from_vec(data, t.dims())
    }

    /// Copies u32 values back to the host (submits and waits).
    pub fn download_indices(&self, t: &GpuIndices) -> Result<Vec<u32>> {
        self.read_back(t.raw(), t.numel())
    }

    /// Copies a mask's u32 words back to the host (submits and waits).
    pub fn download_mask(&self, m: &GpuMask) -> Result<Vec<u32>> {
        self.read_back(m.raw(), m.words())
    }

    fn read_back<T: bytemuck::Pod>(&self, src: &wgpu::Buffer, count: usize) -> Result<Vec<T>> {
        let bytes = (count * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        // Copies must be multiples of 4 bytes, which f32 and u32 are.
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read_back"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut rec = lock(&self.recorder);
            let encoder = self.encoder(&mut rec);
            encoder.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
        }
        self.submit();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver waits below; a send error only means it gave up.
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_error(format!("waiting for a read-back: {e}")))?;
        rx.recv()
            .map_err(|e| device_error(format!("read-back callback dropped: {e}")))?
            .map_err(|e| device_error(format!("mapping a read-back buffer: {e}")))?;
        let data = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| device_error(format!("reading a mapped buffer: {e}")))?;
            bytemuck::cast_slice::<u8, T>(&view).to_vec()
        };
        staging.unmap();
        Ok(data)
    }

    /// An uninitialised f32 tensor (every kernel that returns one writes all of it).
    pub(crate) fn tensor(&self, dims: &[usize]) -> Result<GpuTensor> {
        self.tensor_as(dims, Precision::F32)
    }

    /// An uninitialised tensor stored as `precision`.
    pub(crate) fn tensor_as(&self, dims: &[usize], precision: Precision) -> Result<GpuTensor> {
        let numel = crate::shape::checked_numel(dims)?;
        let bytes = (numel as u64 * precision.bytes() as u64).next_multiple_of(4);
        Ok(GpuTensor::new(
            self.buffer(bytes, "tensor")?,
            dims,
            precision,
        ))
    }

    /// An uninitialised mask of `len` bits.
    pub(crate) fn mask(&self, len: usize) -> Result<GpuMask> {
        Ok(GpuMask::new(
            self.buffer(len.div_ceil(32) as u64 * 4, "mask")?,
            len,
        ))
    }

    /// An uninitialised u32 tensor.
    pub(crate) fn indices(&self, dims: &[usize]) -> Result<GpuIndices> {
        let numel = crate::shape::checked_numel(dims)?;
        Ok(GpuIndices::new(
            self.buffer(numel as u64 * 4, "indices")?,
            dims,
        ))
    }

    fn check_size(&self, bytes: u64, what: &str) -> Result<()> {
        let max = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > max {
            return Err(device_error(format!(
                "{what}: {bytes} bytes exceed the device's {max}-byte storage binding limit \
                 (split the batch into smaller chunks)"
            )));
        }
        Ok(())
    }

    /// A storage buffer of at least `bytes` bytes, from the pool when one is idle.
    fn buffer(&self, bytes: u64, what: &str) -> Result<PooledBuffer> {
        self.check_size(bytes, what)?;
        let class = BufferPool::size_class(bytes);
        let buffer = match self.pool.take(class) {
            Some(b) => b,
            None => self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(what),
                size: class,
                usage: POOLED_USAGE,
                mapped_at_creation: false,
            }),
        };
        Ok(PooledBuffer::new(buffer, class, self.pool.clone()))
    }

    /// A new buffer holding `bytes` (padded to its size class); it joins the pool when dropped.
    fn buffer_with(&self, bytes: &[u8], what: &str) -> Result<PooledBuffer> {
        self.check_size(bytes.len() as u64, what)?;
        let class = BufferPool::size_class(bytes.len() as u64);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: class,
            usage: POOLED_USAGE,
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .get_mapped_range_mut(..)
                .map_err(|e| device_error(format!("{what}: mapping a new buffer: {e}")))?;
            // The rest of the size class stays zero: new buffers are zero-initialised.
            view.slice(..bytes.len()).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(PooledBuffer::new(buffer, class, self.pool.clone()))
    }

    /// Records a zero fill of `buffer`.
    pub(crate) fn clear(&self, buffer: &wgpu::Buffer) {
        let mut rec = lock(&self.recorder);
        self.encoder(&mut rec).clear_buffer(buffer, 0, None);
    }

    /// Records a copy of `src` into `dst` (whole tensors of equal size and precision).
    pub(crate) fn copy(&self, src: &GpuTensor, dst: &GpuTensor) {
        let bytes = src.bytes();
        if bytes > 0 {
            let mut rec = lock(&self.recorder);
            self.encoder(&mut rec)
                .copy_buffer_to_buffer(src.raw(), 0, dst.raw(), 0, bytes);
        }
    }

    /// A copy of a device tensor (same precision).
    pub fn duplicate(&self, t: &GpuTensor) -> Result<GpuTensor> {
        let out = self.tensor_as(t.dims(), t.precision())?;
        self.copy(t, &out);
        Ok(out)
    }

    pub(crate) fn placeholder(&self) -> &wgpu::Buffer {
        &self.placeholder
    }
}

fn check_len(dims: &[usize], len: usize) -> Result<()> {
    let expected = crate::shape::checked_numel(dims)?;
    if expected != len {
        return Err(Error::DataLength {
            shape: dims.to_vec(),
            expected,
            got: len,
        });
    }
    Ok(())
}
