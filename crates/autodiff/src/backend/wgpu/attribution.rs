//! Grad×Input and Integrated Gradients over a batch of copies on the device, each ending in the
//! reduction over copies (Σ and Σ² added into f32 accumulators in copy order, as the CPU
//! explainer): `attribution.wgsl`.

use super::context::{WgpuContext, expect_f32, flat_groups, precision_of, to_u32};
use super::kernels;
use super::tensor::{GpuTensor, Precision};
use crate::error::{Error, Result};

/// The path of Integrated Gradients: the baseline (one sample) and the quadrature's points α
/// and weights on [0, 1], one per step, stored as f32.
#[derive(Debug, Clone, Copy)]
pub struct IgPath<'a> {
    /// The baseline, one sample's elements (stored as the copies are).
    pub baseline: &'a GpuTensor,
    /// α of each step, `[steps]`, f32.
    pub alphas: &'a GpuTensor,
    /// The weight of each step, `[steps]`, f32.
    pub weights: &'a GpuTensor,
}

/// Consecutive path points `first_point..first_point + count`, numbered copy-major (point q is
/// step `q % steps` of copy `q / steps`), and the copies they lie between the baseline and:
/// `copies[i]` is copy `first_copy + i`.
#[derive(Debug, Clone, Copy)]
pub struct IgPoints<'a> {
    pub copies: &'a GpuTensor,
    pub first_copy: usize,
    pub first_point: usize,
    pub count: usize,
}

impl WgpuContext {
    /// Grad×Input reduced over copies: `sum[e] += Σᵢ x[i, e]·g[i, e]` and
    /// `sumsq[e] += Σᵢ (x[i, e]·g[i, e])²` for copies `x[n, ...]` and their gradients `g`.
    pub fn grad_x_input_reduce_copies(
        &self,
        x: &GpuTensor,
        g: &GpuTensor,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<()> {
        let op = "grad_x_input_bwd";
        let prec = precision_of(op, &[x, g])?;
        let n = x.dims().first().copied().unwrap_or(0);
        let e = sum.numel();
        if x.dims() != g.dims() || x.numel() != n * e || sumsq.numel() != e {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.dims().to_vec(),
                rhs: g.dims().to_vec(),
            });
        }
        expect_f32(op, sum)?;
        expect_f32(op, sumsq)?;
        let params = [to_u32(e, op)?, to_u32(n, op)?, 0, 0, 0, 0, 0, 0];
        let bindings = [(1, x.raw()), (2, g.raw()), (7, sum.raw()), (8, sumsq.raw())];
        self.launch(
            kernels::GRAD_X_INPUT_BWD.with(prec),
            &params,
            &bindings,
            flat_groups(e),
        )
    }

    /// The path points `b + α·(x − b)` of `points`: a `[count, ...]` batch of inputs.
    pub fn ig_path_fwd(&self, path: &IgPath<'_>, points: &IgPoints<'_>) -> Result<GpuTensor> {
        let op = "ig_path_fwd";
        let (params, prec) = ig_params(op, path, points)?;
        let mut dims = points.copies.dims().to_vec();
        dims[0] = points.count;
        let out = self.tensor_as(&dims, prec)?;
        let bindings = [
            (1, points.copies.raw()),
            (3, path.baseline.raw()),
            (4, path.alphas.raw()),
            (5, out.raw()),
        ];
        self.launch(
            kernels::IG_PATH_FWD.with(prec),
            &params,
            &bindings,
            flat_groups(out.numel()),
        )?;
        Ok(out)
    }

    /// Integrated Gradients' sums over the gradients `g[count, ...]` of `points`:
    /// `integral += w·g` point by point, and after each copy's last step its attribution
    /// `a = (x − b)·integral` is added into `sum` and `a²` into `sumsq`, and `integral` is reset.
    /// `integral` carries a copy whose points continue in the next call.
    pub fn ig_accumulate_bwd(
        &self,
        path: &IgPath<'_>,
        points: &IgPoints<'_>,
        g: &GpuTensor,
        integral: &mut GpuTensor,
        sum: &mut GpuTensor,
        sumsq: &mut GpuTensor,
    ) -> Result<()> {
        let op = "ig_accumulate_bwd";
        let (params, prec) = ig_params(op, path, points)?;
        precision_of(op, &[points.copies, g])?;
        let e = params[0] as usize;
        if g.dims().first() != Some(&points.count) || g.numel() != points.count * e {
            return Err(Error::ShapeMismatch {
                op,
                lhs: g.dims().to_vec(),
                rhs: [&[points.count], &points.copies.dims()[1..]].concat(),
            });
        }
        for t in [&*integral, &*sum, &*sumsq] {
            expect_f32(op, t)?;
            if t.numel() != e {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: t.dims().to_vec(),
                    rhs: points.copies.dims()[1..].to_vec(),
                });
            }
        }
        let bindings = [
            (1, points.copies.raw()),
            (2, g.raw()),
            (3, path.baseline.raw()),
            (4, path.weights.raw()),
            (6, integral.raw()),
            (7, sum.raw()),
            (8, sumsq.raw()),
        ];
        self.launch(
            kernels::IG_ACCUMULATE_BWD.with(prec),
            &params,
            &bindings,
            flat_groups(e),
        )
    }
}

/// The `Params` of the IG kernels and the copies' precision, after checking that the copies
/// hold every point's copy and that the path's parts fit.
fn ig_params(
    op: &'static str,
    path: &IgPath<'_>,
    points: &IgPoints<'_>,
) -> Result<([u32; 8], Precision)> {
    let prec = precision_of(op, &[points.copies, path.baseline])?;
    for t in [path.alphas, path.weights] {
        expect_f32(op, t)?;
    }
    let steps = path.alphas.numel();
    if steps == 0 || path.weights.numel() != steps {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "needs one α and one weight per step (at least one step), got {} and {}",
                steps,
                path.weights.numel()
            ),
        });
    }
    let d = points.copies.dims();
    let held = d.first().copied().unwrap_or(0);
    let e: usize = d.iter().skip(1).product();
    if path.baseline.numel() != e {
        return Err(Error::ShapeMismatch {
            op,
            lhs: path.baseline.dims().to_vec(),
            rhs: d[1.min(d.len())..].to_vec(),
        });
    }
    let last = points.first_point + points.count.max(1) - 1;
    if points.first_point / steps < points.first_copy || last / steps >= points.first_copy + held {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "points {}..{} of {steps} steps per copy need copies {}..={}, the batch holds \
                 copies {}..{}",
                points.first_point,
                points.first_point + points.count,
                points.first_point / steps,
                last / steps,
                points.first_copy,
                points.first_copy + held
            ),
        });
    }
    // Point indices are u32 words in the kernel.
    to_u32(last + 1, op)?;
    Ok((
        [
            to_u32(e, op)?,
            to_u32(points.count, op)?,
            to_u32(steps, op)?,
            to_u32(points.first_point, op)?,
            to_u32(points.first_copy, op)?,
            0,
            0,
            0,
        ],
        prec,
    ))
}
