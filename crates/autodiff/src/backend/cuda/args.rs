//! Argument blocks passed by value to the kernels (`.param .align 4 .b8 name[size]` in PTX).
//! Each is `#[repr(C)]` of 4-byte fields; the PTX file headers list the same fields at the same
//! byte offsets, and a test compares the two lists.

use crate::error::{Error, Result};
use crate::ops::geometry::{Conv2dGeometry, Pool2dGeometry};
use cudarc::driver::DeviceRepr;

macro_rules! kernel_args {
    ($(#[$meta:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        impl $name {
            /// The field names in declaration order (field k is at byte 4k).
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        // SAFETY: a repr(C) struct of 4-byte plain values, as the PTX `.param` block expects.
        unsafe impl DeviceRepr for $name {}
    };
}

kernel_args!(
    /// Convolution geometry (conv2d.ptx, conv2d_depthwise.ptx, conv2d_bwd_input_reduce_copies.ptx).
    ConvArgs {
        batch: u32,
        in_channels: u32,
        in_h: u32,
        in_w: u32,
        out_channels: u32,
        kernel_h: u32,
        kernel_w: u32,
        out_h: u32,
        out_w: u32,
        stride_h: u32,
        stride_w: u32,
        pad_h: u32,
        pad_w: u32,
        dilation_h: u32,
        dilation_w: u32,
        groups: u32,
        group_in: u32,
        group_out: u32,
        fuse_relu: u32,
        splits: u32,
        split_len: u32,
    }
);

kernel_args!(
    /// Pooling geometry (maxpool2d.ptx, avgpool2d.ptx); planes = N·C.
    PoolArgs {
        planes: u32,
        in_h: u32,
        in_w: u32,
        out_h: u32,
        out_w: u32,
        kernel_h: u32,
        kernel_w: u32,
        stride_h: u32,
        stride_w: u32,
        pad_h: u32,
        pad_w: u32,
        dilation_h: u32,
        dilation_w: u32,
        count_include_pad: u32,
    }
);

kernel_args!(
    /// Strided batched matrix multiply (matmul.ptx).
    MatmulArgs {
        m: u32,
        n: u32,
        k: u32,
        a_row_stride: u32,
        a_col_stride: u32,
        b_row_stride: u32,
        b_col_stride: u32,
        a_batch_stride: u32,
        b_batch_stride: u32,
        c_batch_stride: u32,
        accumulate: u32,
    }
);

kernel_args!(
    /// Noisy copies (noisy_copies.ptx).
    NoiseArgs {
        elements: u32,
        count: u32,
        first: u32,
        seed_lo: u32,
        seed_hi: u32,
        sigma: f32,
    }
);

/// `v` as a u32 kernel size, or a typed error naming the operation.
pub fn size(op: &'static str, what: &str, v: usize) -> Result<u32> {
    // Kernels index with 32-bit arithmetic (signed in places): sizes stay below 2^31.
    if v < (1usize << 31) {
        Ok(v as u32)
    } else {
        Err(Error::InvalidArgument {
            op,
            reason: format!("{what} = {v} is too large for the CUDA kernels (limit 2^31 - 1)"),
        })
    }
}

impl ConvArgs {
    /// The arguments of a convolution; fails when a tensor has 2^31 elements or more.
    pub fn new(op: &'static str, g: &Conv2dGeometry) -> Result<Self> {
        for (what, dims) in [
            ("input elements", g.in_dims()),
            ("output elements", g.out_dims()),
            ("weight elements", g.weight_dims()),
        ] {
            size(op, what, dims.iter().product())?;
        }
        Ok(ConvArgs {
            batch: size(op, "batch", g.batch)?,
            in_channels: size(op, "in_channels", g.in_channels)?,
            in_h: size(op, "in_h", g.in_h)?,
            in_w: size(op, "in_w", g.in_w)?,
            out_channels: size(op, "out_channels", g.out_channels)?,
            kernel_h: size(op, "kernel_h", g.kernel_h)?,
            kernel_w: size(op, "kernel_w", g.kernel_w)?,
            out_h: size(op, "out_h", g.out_h)?,
            out_w: size(op, "out_w", g.out_w)?,
            stride_h: size(op, "stride", g.stride[0])?,
            stride_w: size(op, "stride", g.stride[1])?,
            pad_h: size(op, "padding", g.pad[0])?,
            pad_w: size(op, "padding", g.pad[1])?,
            dilation_h: size(op, "dilation", g.dilation[0])?,
            dilation_w: size(op, "dilation", g.dilation[1])?,
            groups: size(op, "groups", g.groups)?,
            group_in: size(op, "channels per group", g.in_channels / g.groups)?,
            group_out: size(op, "outputs per group", g.out_channels / g.groups)?,
            fuse_relu: 0,
            splits: 1,
            split_len: 0,
        })
    }
}

impl PoolArgs {
    /// The arguments of a pooling; fails when a tensor has 2^31 elements or more.
    pub fn new(op: &'static str, g: &Pool2dGeometry) -> Result<Self> {
        size(op, "input elements", g.in_dims().iter().product())?;
        size(op, "output elements", g.out_dims().iter().product())?;
        Ok(PoolArgs {
            planes: size(op, "planes", g.batch * g.channels)?,
            in_h: size(op, "in_h", g.in_h)?,
            in_w: size(op, "in_w", g.in_w)?,
            out_h: size(op, "out_h", g.out_h)?,
            out_w: size(op, "out_w", g.out_w)?,
            kernel_h: size(op, "kernel", g.kernel[0])?,
            kernel_w: size(op, "kernel", g.kernel[1])?,
            stride_h: size(op, "stride", g.stride[0])?,
            stride_w: size(op, "stride", g.stride[1])?,
            pad_h: size(op, "padding", g.pad[0])?,
            pad_w: size(op, "padding", g.pad[1])?,
            dilation_h: size(op, "dilation", g.dilation[0])?,
            dilation_w: size(op, "dilation", g.dilation[1])?,
            count_include_pad: g.count_include_pad as u32,
        })
    }
}

/// The `+offset name` pairs of a PTX header's argument layout comment for `block`, e.g. the
/// line after `// ConvArgs (.param ...`: used by the tests to compare with [`ConvArgs::FIELDS`].
pub fn documented_fields(ptx: &str, block: &str) -> Vec<(usize, String)> {
    let mut lines = ptx
        .lines()
        .skip_while(|l| !l.starts_with(&format!("// {block} (")));
    lines.next();
    let mut fields = Vec::new();
    for line in lines {
        let Some(text) = line.strip_prefix("//") else {
            break;
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() || !words[0].starts_with('+') {
            break;
        }
        for pair in words.chunks(2) {
            if let [offset, name] = pair
                && let Ok(at) = offset.trim_start_matches('+').parse::<usize>()
            {
                fields.push((at, name.to_string()));
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::kernels::SOURCES;

    fn check(block: &str, fields: &[&str], size_of: usize) {
        assert_eq!(size_of, 4 * fields.len(), "{block}: every field is 4 bytes");
        let mut seen = 0;
        for (file, text) in SOURCES {
            let documented = documented_fields(text, block);
            if documented.is_empty() {
                continue;
            }
            seen += 1;
            let want: Vec<(usize, String)> = fields
                .iter()
                .enumerate()
                .map(|(k, f)| (4 * k, f.to_string()))
                .collect();
            assert_eq!(documented, want, "{file}: {block} layout comment");
            let block_param = text.lines().any(|l| {
                l.trim_start().starts_with(".param .align 4 .b8 param_")
                    && l.trim_end()
                        .trim_end_matches(',')
                        .ends_with(&format!("[{size_of}]"))
            });
            assert!(
                block_param,
                "{file}: no .param block of {size_of} bytes for {block}"
            );
        }
        assert!(seen > 0, "no PTX file documents {block}");
    }

    #[test]
    fn argument_blocks_match_the_ptx_headers() {
        check("ConvArgs", ConvArgs::FIELDS, size_of::<ConvArgs>());
        check("PoolArgs", PoolArgs::FIELDS, size_of::<PoolArgs>());
        check("MatmulArgs", MatmulArgs::FIELDS, size_of::<MatmulArgs>());
        check("NoiseArgs", NoiseArgs::FIELDS, size_of::<NoiseArgs>());
    }
}
