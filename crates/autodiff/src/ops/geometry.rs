//! Shape arithmetic of convolution and pooling, shared by every backend.
//!
//! A geometry is computed once per call from the input shapes and the parameters, with every
//! check done here, so kernels can index without re-validating.

use crate::error::{Error, Result};

/// Parameters of a 2-D convolution, as PyTorch's `Conv2d` (plus ONNX's asymmetric padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between windows, (height, width).
    pub stride: [usize; 2],
    /// Zero padding (top, left, bottom, right).
    pub padding: [usize; 4],
    /// Spacing between kernel taps, (height, width).
    pub dilation: [usize; 2],
    /// Number of channel groups (`groups == C_in == C_out` is depthwise).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0; 4],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Stride 1, no padding, no dilation, one group.
    pub fn new() -> Self {
        Self::default()
    }
    /// The same stride on both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The same zero padding on all four sides.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p; 4];
        self
    }
    /// The same dilation on both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// The number of groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Every size a convolution kernel needs, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub stride: [usize; 2],
    /// Padding before the first row and column (top, left); the end padding only shapes the output.
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dGeometry {
    /// Checks `x` = [N, C, H, W] against `w` = [O, C/groups, kh, kw] and computes the output size.
    pub fn new(x: &[usize], w: &[usize], p: &Conv2dParams) -> Result<Self> {
        let op = "conv2d";
        if x.len() != 4 {
            return Err(Error::InvalidShape {
                op,
                shape: x.to_vec(),
                reason: "input must be [N, C, H, W]".into(),
            });
        }
        if w.len() != 4 {
            return Err(Error::InvalidShape {
                op,
                shape: w.to_vec(),
                reason: "weight must be [O, C/groups, kH, kW]".into(),
            });
        }
        check_positive(op, "stride", &p.stride)?;
        check_positive(op, "dilation", &p.dilation)?;
        let g = p.groups;
        if g == 0 || !x[1].is_multiple_of(g) || !w[0].is_multiple_of(g) {
            return Err(Error::InvalidArgument {
                op,
                reason: format!(
                    "groups = {g} must divide both input channels {} and output channels {}",
                    x[1], w[0]
                ),
            });
        }
        if w[1] * g != x[1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: x.to_vec(),
                rhs: w.to_vec(),
            });
        }
        if w[2] == 0 || w[3] == 0 {
            return Err(Error::InvalidShape {
                op,
                shape: w.to_vec(),
                reason: "kernel size must be positive".into(),
            });
        }
        let out_h = window_count(
            op,
            x[2],
            w[2],
            p.stride[0],
            p.padding[0] + p.padding[2],
            p.dilation[0],
            false,
            p.padding[0],
        )?;
        let out_w = window_count(
            op,
            x[3],
            w[3],
            p.stride[1],
            p.padding[1] + p.padding[3],
            p.dilation[1],
            false,
            p.padding[1],
        )?;
        Ok(Conv2dGeometry {
            batch: x[0],
            in_channels: x[1],
            in_h: x[2],
            in_w: x[3],
            out_channels: w[0],
            kernel_h: w[2],
            kernel_w: w[3],
            out_h,
            out_w,
            stride: p.stride,
            pad: [p.padding[0], p.padding[1]],
            dilation: p.dilation,
            groups: g,
        })
    }

    /// Output shape [N, O, OH, OW].
    pub fn out_dims(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.out_h, self.out_w]
    }
    /// Input shape [N, C, H, W].
    pub fn in_dims(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.in_h, self.in_w]
    }
    /// Weight shape [O, C/groups, kH, kW].
    pub fn weight_dims(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel_h,
            self.kernel_w,
        ]
    }
    /// Multiply-adds of the forward pass (each is 2 FLOPs).
    pub fn macs(&self) -> u64 {
        (self.batch * self.out_channels * self.out_h * self.out_w) as u64
            * ((self.in_channels / self.groups) * self.kernel_h * self.kernel_w) as u64
    }
}

/// Parameters of a 2-D max or average pool, as PyTorch's `MaxPool2d` / `AvgPool2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pool2dParams {
    /// Window size, (height, width).
    pub kernel: [usize; 2],
    /// Step between windows, (height, width).
    pub stride: [usize; 2],
    /// Implicit padding on both sides, (height, width): -inf for max, zeros for average.
    pub padding: [usize; 2],
    /// Spacing between taps (max pool only; average pool requires 1).
    pub dilation: [usize; 2],
    /// Round the output size up instead of down (windows must still start inside the input).
    pub ceil_mode: bool,
    /// Average pool: divide by the full window including padding (PyTorch's default).
    pub count_include_pad: bool,
}

impl Pool2dParams {
    /// A square window of size `k` with stride `k` (PyTorch's default), no padding.
    pub fn new(k: usize) -> Self {
        Pool2dParams {
            kernel: [k, k],
            stride: [k, k],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    /// The same stride on both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    /// The same padding on both axes.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// The same dilation on both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    /// Round output sizes up.
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
    /// Average pool divisor convention.
    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.count_include_pad = on;
        self
    }
}

/// Every size a pooling kernel needs, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dGeometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub count_include_pad: bool,
}

impl Pool2dGeometry {
    /// Checks `x` = [N, C, H, W] against the parameters and computes the output size.
    pub fn new(op: &'static str, x: &[usize], p: &Pool2dParams) -> Result<Self> {
        if x.len() != 4 {
            return Err(Error::InvalidShape {
                op,
                shape: x.to_vec(),
                reason: "input must be [N, C, H, W]".into(),
            });
        }
        check_positive(op, "kernel size", &p.kernel)?;
        check_positive(op, "stride", &p.stride)?;
        check_positive(op, "dilation", &p.dilation)?;
        for axis in 0..2 {
            if p.padding[axis] * 2 > p.kernel[axis] {
                return Err(Error::InvalidArgument {
                    op,
                    reason: format!(
                        "padding {:?} must be at most half the kernel size {:?}",
                        p.padding, p.kernel
                    ),
                });
            }
        }
        let out_h = window_count(
            op,
            x[2],
            p.kernel[0],
            p.stride[0],
            2 * p.padding[0],
            p.dilation[0],
            p.ceil_mode,
            p.padding[0],
        )?;
        let out_w = window_count(
            op,
            x[3],
            p.kernel[1],
            p.stride[1],
            2 * p.padding[1],
            p.dilation[1],
            p.ceil_mode,
            p.padding[1],
        )?;
        Ok(Pool2dGeometry {
            batch: x[0],
            channels: x[1],
            in_h: x[2],
            in_w: x[3],
            out_h,
            out_w,
            kernel: p.kernel,
            stride: p.stride,
            pad: p.padding,
            dilation: p.dilation,
            count_include_pad: p.count_include_pad,
        })
    }

    /// Output shape [N, C, OH, OW].
    pub fn out_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.out_h, self.out_w]
    }
    /// Input shape [N, C, H, W].
    pub fn in_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.in_h, self.in_w]
    }
}

fn check_positive(op: &'static str, what: &str, v: &[usize; 2]) -> Result<()> {
    if v.contains(&0) {
        return Err(Error::InvalidArgument {
            op,
            reason: format!("{what} must be positive, got {v:?}"),
        });
    }
    Ok(())
}

/// Number of windows along one axis, with PyTorch's rules (in ceil mode the last window must
/// start inside the input or the leading padding).
#[allow(clippy::too_many_arguments)]
fn window_count(
    op: &'static str,
    size: usize,
    kernel: usize,
    stride: usize,
    total_pad: usize,
    dilation: usize,
    ceil_mode: bool,
    pad_begin: usize,
) -> Result<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + total_pad;
    if padded < span {
        return Err(Error::InvalidArgument {
            op,
            reason: format!(
                "kernel span {span} is larger than the padded input size {padded} (input {size})"
            ),
        });
    }
    let room = padded - span;
    let mut count = if ceil_mode {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil_mode && (count - 1) * stride >= size + pad_begin {
        count -= 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_output_sizes_match_pytorch_formula() {
        let g = Conv2dGeometry::new(
            &[2, 4, 9, 7],
            &[6, 2, 3, 3],
            &Conv2dParams::new()
                .stride(2)
                .padding(1)
                .dilation(2)
                .groups(2),
        )
        .unwrap();
        // floor((9 + 2 - 2*2 - 1) / 2) + 1 = 4; floor((7 + 2 - 4 - 1) / 2) + 1 = 3
        assert_eq!(g.out_dims(), [2, 6, 4, 3]);
    }

    #[test]
    fn conv_rejects_bad_groups_and_channels() {
        let p = Conv2dParams::new().groups(3);
        assert!(matches!(
            Conv2dGeometry::new(&[1, 4, 5, 5], &[6, 2, 3, 3], &p),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            Conv2dGeometry::new(&[1, 4, 5, 5], &[6, 3, 3, 3], &Conv2dParams::new()),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(Conv2dGeometry::new(&[1, 4, 2, 2], &[6, 4, 3, 3], &Conv2dParams::new()).is_err());
    }

    #[test]
    fn pool_ceil_mode_matches_pytorch() {
        // PyTorch: MaxPool2d(3, 2, ceil_mode=True) on 6x6 gives 3x3 (floor mode gives 2x2).
        let p = Pool2dParams::new(3).stride(2).ceil_mode(true);
        assert_eq!(
            Pool2dGeometry::new("t", &[1, 1, 6, 6], &p).unwrap().out_h,
            3
        );
        let p = Pool2dParams::new(3).stride(2);
        assert_eq!(
            Pool2dGeometry::new("t", &[1, 1, 6, 6], &p).unwrap().out_h,
            2
        );
        // PyTorch: MaxPool2d(2, 2, padding=1, ceil_mode=True) on 5x5 gives 3x3 (window 4 would
        // start in the trailing padding, so it is dropped).
        let p = Pool2dParams::new(2).padding(1).ceil_mode(true);
        assert_eq!(
            Pool2dGeometry::new("t", &[1, 1, 5, 5], &p).unwrap().out_h,
            3
        );
    }
}
