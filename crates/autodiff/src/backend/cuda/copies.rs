//! SmoothGrad's noisy copies on the device (noisy_copies.ptx): noise generated in the kernel by
//! the same Philox4x32-10 stream as `crate::rng`, and the backward of the copies.

use super::args::{NoiseArgs, size};
use super::kernels as k;
use super::{CudaContext, CudaTensor, grid_1d, launch};
use crate::error::{Error, Result};
use crate::shape::Shape;

impl CudaContext {
    /// `count` noisy copies of `x[1, ...]`: `out[i, e] = x[e] + sigma · normal(seed, first + i, e)`,
    /// the CPU's `noisy_copies_fwd` with `NoiseSource::Philox { seed }`. The draws are the CPU's
    /// bit for bit (the same Philox stream and the same Cephes steps, see `docs/cuda.md`); x + σ·z
    /// may round once (FMA) or twice.
    pub fn noisy_copies(
        &self,
        x: &CudaTensor,
        sigma: f32,
        seed: u64,
        first: usize,
        count: usize,
    ) -> Result<CudaTensor> {
        let op = "noisy_copies";
        let d = x.dims();
        if d.first() != Some(&1) {
            return Err(Error::InvalidShape {
                op,
                shape: d.to_vec(),
                reason: "input must be one sample [1, ...]".into(),
            });
        }
        if !sigma.is_finite() || sigma < 0.0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("sigma must be finite and non-negative, got {sigma}"),
            });
        }
        if first + count > u32::MAX as usize + 1 {
            return Err(Error::InvalidArgument {
                op,
                reason: "copy indices must fit in 32 bits".into(),
            });
        }
        let elements = x.numel();
        size(op, "elements", elements * count)?;
        let args = NoiseArgs {
            elements: elements as u32,
            count: count as u32,
            first: first as u32,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            sigma,
        };
        let mut dims = d.to_vec();
        dims[0] = count;
        let out = self.new_tensor(Shape::new(&dims)?)?;
        let threads = count * elements.div_ceil(4);
        if threads > 0 {
            launch!(
                self,
                k::NOISY_COPIES,
                grid_1d(threads),
                &x.ptr(self),
                &out.ptr(self),
                &args
            )?;
        }
        Ok(out)
    }

    /// `count` noisy copies of `x[1, ...]` from given standard normal draws
    /// `noise[count, ...]` (another framework's noise replayed): `out[i, e] = x[e] + sigma ·
    /// noise[i, e]`, the CPU's `noisy_copies_fwd` with `NoiseSource::Given`, the same bits.
    pub fn noisy_copies_given(
        &self,
        x: &CudaTensor,
        noise: &CudaTensor,
        sigma: f32,
    ) -> Result<CudaTensor> {
        let op = "noisy_copies (given noise)";
        let d = x.dims();
        let nd = noise.dims();
        if d.first() != Some(&1) || nd.len() != d.len() || nd[1..] != d[1..] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: nd.to_vec(),
                rhs: d.to_vec(),
            });
        }
        if !sigma.is_finite() || sigma < 0.0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("sigma must be finite and non-negative, got {sigma}"),
            });
        }
        let elements = x.numel();
        let count = nd[0];
        size(op, "elements", elements * count)?;
        let args = NoiseArgs {
            elements: elements as u32,
            count: count as u32,
            sigma,
            ..NoiseArgs::default()
        };
        let out = self.new_tensor(Shape::new(nd)?)?;
        if out.numel() > 0 {
            launch!(
                self,
                k::NOISY_COPIES_GIVEN,
                grid_1d(out.numel()),
                &x.ptr(self),
                &noise.ptr(self),
                &out.ptr(self),
                &args
            )?;
        }
        Ok(out)
    }

    /// The backward of the copies: `sum[e] += Σᵢ g[i, e]`, `sumsq[e] += Σᵢ g[i, e]²`, copies in
    /// order (the CPU's `reduce_copies`, same bits).
    pub fn noisy_copies_bwd(
        &self,
        g: &CudaTensor,
        sum: &mut CudaTensor,
        sumsq: &mut CudaTensor,
    ) -> Result<()> {
        let op = "noisy_copies_bwd";
        let e = sum.numel();
        if sumsq.dims() != sum.dims()
            || (e == 0 && g.numel() != 0)
            || (e > 0 && !g.numel().is_multiple_of(e))
        {
            return Err(Error::ShapeMismatch {
                op,
                lhs: g.dims().to_vec(),
                rhs: sum.dims().to_vec(),
            });
        }
        size(op, "elements", g.numel())?;
        if e == 0 {
            return Ok(());
        }
        let count = (g.numel() / e) as u32;
        launch!(
            self,
            k::NOISY_COPIES_BWD,
            grid_1d(e),
            &g.ptr(self),
            &sum.ptr(self),
            &sumsq.ptr(self),
            &count,
            &(e as u32)
        )
    }

    /// Philox4x32-10 of each counter (four words each) under `key`, computed on the device
    /// (for checking the kernel's integer stream against `crate::rng::philox4x32_10`).
    pub fn philox(&self, counters: &[[u32; 4]], key: [u32; 2]) -> Result<Vec<[u32; 4]>> {
        let n = size("philox", "counters", counters.len())?;
        let flat: Vec<u32> = counters.iter().flatten().copied().collect();
        let input = self.upload_slice(&flat)?;
        let output = self.alloc_zeros::<u32>(flat.len())?;
        if n > 0 {
            let (ip, op) = (
                super::address(&input, self.stream()),
                super::address(&output, self.stream()),
            );
            launch!(
                self,
                k::PHILOX,
                grid_1d(counters.len()),
                &ip,
                &op,
                &n,
                &key[0],
                &key[1]
            )?;
        }
        let words = self.download_slice(&output, flat.len())?;
        Ok(words.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect())
    }

    /// Standard normal draws `0..len` of `stream` under `seed` (as `crate::rng::fill_normal`
    /// from index 0), computed on the device.
    pub fn normal(&self, seed: u64, stream: u32, len: usize) -> Result<Vec<f32>> {
        let n = size("normal", "draws", len)?;
        let out = self.alloc_zeros::<f32>(len)?;
        if n > 0 {
            let op = super::address(&out, self.stream());
            launch!(
                self,
                k::NORMAL,
                grid_1d(len.div_ceil(4)),
                &op,
                &n,
                &(seed as u32),
                &((seed >> 32) as u32),
                &stream
            )?;
        }
        self.download_slice(&out, len)
    }
}
