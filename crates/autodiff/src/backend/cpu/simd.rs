//! Run-time selection of vector extensions for the CPU kernels written in plain Rust.
//!
//! The crate builds for baseline x86-64 (SSE2), so its own loops would vectorise only 4 wide.
//! [`multiversion!`] compiles a kernel three times — AVX-512, AVX2 + FMA, baseline — and picks
//! the best the CPU has at run time (`is_x86_feature_detected!` is a cached load). The
//! arithmetic is the same in every copy (Rust never contracts `a * b + c` into an FMA, and an
//! explicit `mul_add` is one fused multiply-add in every copy: the instruction where the copy
//! has FMA, the C library's exactly rounded `fmaf` otherwise), so the results are bit-identical
//! whichever copy runs. The `gemm` crate dispatches its own kernels.

/// Defines `fn $name<T: Float>(args)` that runs `$imp(args)` compiled for the best vector
/// extension this CPU has (AVX-512, AVX2 + FMA, or the baseline), so that the transforms'
/// loops vectorise to the machine's width while the crate builds for any x86-64. `$imp` and
/// everything it calls must be `#[inline(always)]` so that they are compiled inside the
/// feature-enabled copies.
macro_rules! multiversion_impl {
    ($(#[$meta:meta])* fn $name:ident = $imp:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name<T: $crate::element::Float>($($arg: $ty),*) {
            $crate::backend::cpu::simd::multiversion!(@dispatch [T: $crate::element::Float] $imp($($arg: $ty),*))
        }
    };
    // The same for a function without the element type parameter.
    ($(#[$meta:meta])* plain fn $name:ident = $imp:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            $crate::backend::cpu::simd::multiversion!(@dispatch [] $imp($($arg: $ty),*))
        }
    };
    (@dispatch [$($generics:tt)*] $imp:ident($($arg:ident: $ty:ty),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<$($generics)*>($($arg: $ty),*) {
                $imp($($arg),*)
            }
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<$($generics)*>($($arg: $ty),*) {
                $imp($($arg),*)
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512dq")
            {
                // SAFETY: the CPU has these extensions (checked just above).
                return unsafe { avx512($($arg),*) };
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: as above.
                return unsafe { avx2($($arg),*) };
            }
        }
        $imp($($arg),*)
    }};
}
pub(crate) use multiversion_impl as multiversion;

/// to = from (equal lengths) in fixed-size moves of 16, 8, 4 elements (the last one overlapping
/// the one before), inline: for rows of 4 … 64 elements, too short to pay for a `memcpy` call.
#[inline(always)]
pub(crate) fn copy_short<T: Copy>(to: &mut [T], from: &[T]) {
    let n = to.len();
    let from = &from[..n];
    let chunk =
        |to: &mut [T], at: usize, len: usize| to[at..at + len].copy_from_slice(&from[at..at + len]);
    match n {
        16.. => {
            for at in (0..n - 15).step_by(16) {
                chunk(to, at, 16);
            }
            chunk(to, n - 16, 16);
        }
        8..=15 => {
            chunk(to, 0, 8);
            chunk(to, n - 8, 8);
        }
        4..=7 => {
            chunk(to, 0, 4);
            chunk(to, n - 4, 4);
        }
        _ => to.copy_from_slice(from),
    }
}

#[cfg(test)]
mod tests {
    use super::copy_short;

    #[test]
    fn copy_short_copies_every_length() {
        for n in 0..100usize {
            let from: Vec<u32> = (0..n as u32).map(|v| v * 7 + 1).collect();
            let mut to = vec![0u32; n];
            copy_short(&mut to, &from);
            assert_eq!(to, from, "length {n}");
        }
    }
}
