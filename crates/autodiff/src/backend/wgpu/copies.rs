//! SmoothGrad on the device: the noisy copies with their noise generated in the kernel (the
//! CPU's Philox4x32-10 stream and Box–Muller), the reduction over copies, and the fused last
//! backward kernel that reduces the first convolution's input gradient over copies on the fly.

use super::context::{WgpuContext, expect_f32, flat_groups, precision_of, to_u32};
use super::conv::{conv_params, expect_dims};
use super::kernels;
use super::tensor::GpuTensor;
use crate::backend::cpu::copies::NoiseSource;
use crate::error::{Error, Result};
use crate::ops::copies::NoiseSpec;
use crate::ops::geometry::Conv2dGeometry;

/// The `Params` struct of `noisy_copies.wgsl`.
fn noise_params(
    elements: usize,
    count: usize,
    first: usize,
    seed: u64,
    sigma: f32,
) -> Result<[u32; 8]> {
    let op = "noisy_copies";
    Ok([
        to_u32(elements, op)?,
        to_u32(count, op)?,
        to_u32(first, op)?,
        seed as u32,
        (seed >> 32) as u32,
        sigma.to_bits(),
        0,
        0,
    ])
}

impl WgpuContext {
    /// `spec.count` noisy copies of `x[1, ...]`: `out[i, e] = x[e] + σ·ε(first + i, e)`, with
    /// `ε` drawn in the kernel from the CPU's Philox stream (or replayed from
    /// [`NoiseSource::Given`]), as [`Tape::noisy_copies`](crate::Tape::noisy_copies).
    pub fn noisy_copies(&self, x: &GpuTensor, spec: &NoiseSpec<f32>) -> Result<GpuTensor> {
        let op = "noisy_copies";
        let d = x.dims();
        if d.first() != Some(&1) {
            return Err(Error::InvalidShape {
                op,
                shape: d.to_vec(),
                reason: "input must be one sample [1, ...]".into(),
            });
        }
        if spec.count == 0 {
            return Err(Error::InvalidArgument {
                op,
                reason: "the number of copies must be positive".into(),
            });
        }
        if !spec.sigma.is_finite() || spec.sigma < 0.0 {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("sigma must be finite and non-negative, got {}", spec.sigma),
            });
        }
        let e = x.numel();
        let mut dims = d.to_vec();
        dims[0] = spec.count;
        let prec = x.precision();
        let out = self.tensor_as(&dims, prec)?;
        let sigma = spec.sigma as f32;
        match &spec.source {
            NoiseSource::Philox { seed } => {
                let params = noise_params(e, spec.count, spec.first, *seed, sigma)?;
                // Copy indices are the Philox stream numbers, 32-bit words on both backends.
                to_u32(spec.first + spec.count, op)?;
                let bindings = [(1, x.raw()), (3, out.raw())];
                let blocks = e.div_ceil(4) * spec.count;
                self.launch(
                    kernels::NOISY_COPIES_FWD.with(prec),
                    &params,
                    &bindings,
                    flat_groups(blocks),
                )?;
            }
            NoiseSource::Given(t) => {
                let needed = (spec.first + spec.count).checked_mul(e);
                if t.dims().len() != d.len()
                    || t.dims()[1..] != d[1..]
                    || needed.is_none_or(|n| n > t.numel())
                {
                    return Err(Error::ShapeMismatch {
                        op: "noisy_copies (given noise)",
                        lhs: t.dims().to_vec(),
                        rhs: [&[spec.first + spec.count], &d[1..]].concat(),
                    });
                }
                // Only the rows this call uses go to the device.
                let rows = &t.as_slice()[spec.first * e..(spec.first + spec.count) * e];
                let noise = self.upload_slice_as(rows, &[spec.count * e], prec)?;
                let params = noise_params(e, spec.count, 0, 0, sigma)?;
                let bindings = [(1, x.raw()), (3, out.raw()), (5, noise.raw())];
                self.launch(
                    kernels::NOISY_COPIES_GIVEN_FWD.with(prec),
                    &params,
                    &bindings,
                    flat_groups(out.numel()),
                )?;
            }
        }
        Ok(out)
    }

    /// The backward of the copies: `sum[e] += Σᵢ g[i, e]` and `sumsq[e] += Σᵢ g[i, e]²` for
    /// `g[n, ...]` and `sum`, `sumsq` of one copy's element count.
    pub fn reduce_copies(
        &self,
        g: &GpuTensor,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<()> {
        let op = "reduce_copies";
        let n = g.dims().first().copied().unwrap_or(0);
        let e = sum.numel();
        if g.numel() != n * e || sumsq.numel() != e {
            return Err(Error::ShapeMismatch {
                op,
                lhs: g.dims().to_vec(),
                rhs: sum.dims().to_vec(),
            });
        }
        expect_f32(op, sum)?;
        expect_f32(op, sumsq)?;
        let params = noise_params(e, n, 0, 0, 0.0)?;
        let bindings = [(5, g.raw()), (6, sum.raw()), (7, sumsq.raw())];
        self.launch(
            kernels::NOISY_COPIES_BWD.with(g.precision()),
            &params,
            &bindings,
            flat_groups(e),
        )
    }

    /// SmoothGrad's fused last backward kernel: for a convolution over `g.batch` copies, adds
    /// `Σᵢ dxᵢ` into `sum` and `Σᵢ dxᵢ²` into `sumsq` (each of one sample's `C·H·W` elements),
    /// looping over the copies inside the kernel so the per-copy gradients are never written.
    pub fn conv2d_bwd_input_reduce_copies(
        &self,
        g: &Conv2dGeometry,
        dy: &GpuTensor,
        w: &GpuTensor,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<()> {
        let op = "conv2d_bwd_input_reduce_copies";
        expect_dims(op, dy, &g.out_dims())?;
        expect_dims(op, w, &g.weight_dims())?;
        let per_copy = g.in_channels * g.in_h * g.in_w;
        for t in [&*sum, &*sumsq] {
            if t.numel() != per_copy {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: t.dims().to_vec(),
                    rhs: vec![1, g.in_channels, g.in_h, g.in_w],
                });
            }
        }
        let prec = precision_of(op, &[dy, w])?;
        expect_f32(op, sum)?;
        expect_f32(op, sumsq)?;
        let params = conv_params(g, false, op)?;
        let bindings = [
            (2, w.raw()),
            (4, dy.raw()),
            (5, sum.raw()),
            (7, sumsq.raw()),
        ];
        let grid = super::context::Grid::Exact {
            x: to_u32((g.in_h * g.in_w).div_ceil(256), op)?,
            y: to_u32(g.in_channels, op)?,
        };
        self.launch(
            kernels::CONV2D_BWD_INPUT_REDUCE_COPIES.with(prec),
            &params,
            &bindings,
            grid,
        )
    }

    /// Standard normal values, draws `0..` of Philox stream 0 under `seed`: the device twin of
    /// [`Tensor::randn`](crate::Tensor::randn).
    pub fn randn(&self, dims: &[usize], seed: u64) -> Result<GpuTensor> {
        let out = self.tensor(dims)?;
        let params = noise_params(out.numel(), 1, 0, seed, 0.0)?;
        let bindings = [(3, out.raw())];
        self.launch(
            kernels::NORMAL_FWD,
            &params,
            &bindings,
            flat_groups(out.numel().div_ceil(4)),
        )?;
        Ok(out)
    }

    /// Philox4x32-10 of each counter under `key`, computed on the device (to check it against
    /// [`rng::philox4x32_10`](crate::rng::philox4x32_10) bit for bit). Submits and waits.
    pub fn philox(&self, counters: &[[u32; 4]], key: [u32; 2]) -> Result<Vec<[u32; 4]>> {
        let n = counters.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let flat: Vec<u32> = counters.iter().flatten().copied().collect();
        let input = self.upload_indices(&flat, &[n, 4])?;
        let output = self.indices(&[n, 4])?;
        let seed = key[0] as u64 | (key[1] as u64) << 32;
        let params = noise_params(n, 1, 0, seed, 0.0)?;
        let bindings = [(2, input.raw()), (4, output.raw())];
        self.launch(kernels::PHILOX_FWD, &params, &bindings, flat_groups(n))?;
        let bits = self.download_indices(&output)?;
        Ok(bits
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect())
    }
}
