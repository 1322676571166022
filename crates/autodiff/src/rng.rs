//! Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11) and Box–Muller.
//!
//! A draw is a pure function of (seed, stream, index), with no state carried between calls, so
//! any backend, any thread and any split of a batch into chunks produces the same numbers.
//! SmoothGrad keys its noise by (seed, copy index, element index) through [`normal`].

use crate::backend::cpu::simd::multiversion;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = (a as u64) * (b as u64);
    ((p >> 32) as u32, p as u32)
}

/// Philox4x32 with 10 rounds: maps a 128-bit counter and a 64-bit key to 128 random bits.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A uniform in (0, 1] from the top 24 bits of `bits` (exact in f32).
#[inline(always)]
fn uniform_open_closed(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// A uniform in [0, 1) from the top 24 bits of `bits` (exact in f32).
#[inline(always)]
fn uniform_closed_open(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// ln u for a normal positive f32 `u` (Cephes `logf`): u = m · 2^e with m in [√½, √2),
/// ln u = e · ln 2 + log1p(m − 1) by a degree-9 polynomial, ln 2 split in two parts. The
/// operations, in order and with the same fused multiply-adds, of `log_f32` in
/// `kernels/cuda/noisy_copies.ptx`, so the CPU and the CUDA kernel give the same bits. Branch
/// free (selects), so that [`fill_normal`]'s blocks vectorise.
#[inline(always)]
fn ln_f32(u: f32) -> f32 {
    let bits = u.to_bits();
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000);
    let below = m < f32::from_bits(0x3F35_04F3);
    let e = ((bits >> 23) as i32) - 126 - below as i32;
    let x = if below { m + m } else { m } - 1.0;
    let z = x * x;
    let mut y = f32::from_bits(0x3D90_21BB);
    for c in [
        0xBDEB_D1B8u32,
        0x3DEF_251A,
        0xBDFE_5D4F,
        0x3E11_E9BF,
        0xBE2A_AE50,
        0x3E4C_CEAC,
        0xBE7F_FFFC,
        0x3EAA_AAAA,
    ] {
        y = y.mul_add(x, f32::from_bits(c));
    }
    y = y * x * z;
    let fe = e as f32;
    y = fe.mul_add(f32::from_bits(0xB95E_8083), y);
    y = z.mul_add(-0.5, y);
    fe.mul_add(f32::from_bits(0x3F31_8000), x + y)
}

/// (cos a, sin a) for 0 ≤ a ≤ 2π (Cephes `sinf`/`cosf`): j = trunc(a · 4/π) rounded up to
/// even, r = a − j · π/4 by a three-part Cody–Waite reduction, quadrant (j / 2) mod 4 picks
/// the polynomial and the signs. The operations of `sincos_f32` in `noisy_copies.ptx`.
#[inline(always)]
fn cos_sin_f32(angle: f32) -> (f32, f32) {
    // trunc(a · 4/π) as an integer through the bits of trunc + 2²³ (exact below 2²³; here
    // the product is in [0, 8]): LLVM keeps this in vector registers, where a float → integer
    // `as` cast (saturating) became one scalar conversion and two compares per lane.
    let t = (angle * f32::from_bits(0x3FA2_F983)).trunc();
    let mut j = (t + 8_388_608.0).to_bits() - 0x4B00_0000;
    j += j & 1;
    let y = -(j as f32);
    let r = y.mul_add(f32::from_bits(0x3F49_0000), angle);
    let r = y.mul_add(f32::from_bits(0x397D_A000), r);
    let r = y.mul_add(f32::from_bits(0x3322_2169), r);
    let z = r * r;
    let s = f32::from_bits(0xB94C_A1F9).mul_add(z, f32::from_bits(0x3C08_839E));
    let s = (s.mul_add(z, f32::from_bits(0xBE2A_AAA3)) * z).mul_add(r, r);
    let c = f32::from_bits(0x37CC_F5CE).mul_add(z, f32::from_bits(0xBAB6_061A));
    let c = c.mul_add(z, f32::from_bits(0x3D2A_AAA5)) * z;
    let c = c.mul_add(z, z.mul_add(-0.5, 1.0));
    let q = (j >> 1) & 3;
    let swap = q & 1 == 1;
    let (c, s) = (if swap { s } else { c }, if swap { c } else { s });
    // Sign flips as bit operations: q = 1, 2 negate the cosine, q = 2, 3 the sine.
    let c = f32::from_bits(c.to_bits() ^ ((((q + 1) & 2) >> 1) << 31));
    let s = f32::from_bits(s.to_bits() ^ ((q >> 1) << 31));
    (c, s)
}

/// Two independent standard normals from two 32-bit words (Box–Muller in f32 arithmetic):
/// u₁ = (top 24 bits of `a` + 1) / 2²⁴ in (0, 1], u₂ = top 24 bits of `b` / 2²⁴ in [0, 1),
/// (√(−2 ln u₁) cos 2πu₂, √(−2 ln u₁) sin 2πu₂).
///
/// `ln`, `cos` and `sin` are Cephes' polynomials in explicitly fused f32 steps, not the
/// platform's libm: the CUDA kernel (`noisy_copies.ptx`) runs the same steps, so both give the
/// same bits, and the result does not depend on the C library. Within 7.2e-7 of the exactly
/// rounded formula over every u₁ (see the tests).
#[inline(always)]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let radius = (ln_f32(uniform_open_closed(a)) * -2.0).sqrt();
    let (c, s) = cos_sin_f32(uniform_closed_open(b) * std::f32::consts::TAU);
    (radius * c, radius * s)
}

/// Four standard normals for block `block` of stream `stream` under `seed`.
///
/// Counter = (block low, block high, stream, 0); key = (seed low, seed high).
#[inline]
pub fn normal4(seed: u64, stream: u32, block: u64) -> [f32; 4] {
    let r = philox4x32_10(
        [block as u32, (block >> 32) as u32, stream, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    let (z0, z1) = box_muller(r[0], r[1]);
    let (z2, z3) = box_muller(r[2], r[3]);
    [z0, z1, z2, z3]
}

/// The standard normal draw number `index` of stream `stream` under `seed`.
#[inline]
pub fn normal(seed: u64, stream: u32, index: u64) -> f32 {
    normal4(seed, stream, index / 4)[(index % 4) as usize]
}

/// Fills `out` with draws `start..start + out.len()` of stream `stream`: the same values as
/// [`normal`] one at a time, 64 at once where the range holds whole blocks.
pub fn fill_normal(seed: u64, stream: u32, start: u64, out: &mut [f32]) {
    // The draws before the first whole block, one at a time.
    let head = (((4 - start % 4) % 4) as usize).min(out.len());
    let (first, rest) = out.split_at_mut(head);
    for (k, v) in first.iter_mut().enumerate() {
        *v = normal(seed, stream, start + k as u64);
    }
    let mut index = start + head as u64;
    let whole = rest.len() - rest.len() % GROUP;
    let (groups, tail) = rest.split_at_mut(whole);
    fill_groups(seed, stream, index / 4, groups);
    index += whole as u64;
    if !tail.is_empty() {
        // One more group, of which the tail takes the front.
        let mut group = [0f32; GROUP];
        fill_groups(seed, stream, index / 4, &mut group);
        tail.copy_from_slice(&group[..tail.len()]);
    }
}

/// Philox blocks computed side by side in [`fill_groups`]: 16 blocks, 64 draws.
const LANES: usize = 16;
const GROUP: usize = 4 * LANES;

multiversion! {
    /// Fills `out` (a multiple of [`GROUP`] long) with the draws of blocks `first_block..`.
    plain fn fill_groups = fill_groups_imp(seed: u64, stream: u32, first_block: u64, out: &mut [f32])
}

#[inline(always)]
fn fill_groups_imp(seed: u64, stream: u32, first_block: u64, out: &mut [f32]) {
    for (g, group) in out.chunks_exact_mut(GROUP).enumerate() {
        let first = first_block + (g * LANES) as u64;
        // Counter words lane by lane (lane l = block first + l), then the ten rounds of
        // `philox4x32_10` on all lanes at once.
        let block = |l: usize| first + l as u64;
        let mut c = [
            std::array::from_fn(|l| block(l) as u32),
            std::array::from_fn(|l| (block(l) >> 32) as u32),
            [stream; LANES],
            [0u32; LANES],
        ];
        let mut k = [seed as u32, (seed >> 32) as u32];
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(W0);
                k[1] = k[1].wrapping_add(W1);
            }
            let mut next = [[0u32; LANES]; 4];
            for l in 0..LANES {
                let (hi0, lo0) = mulhilo(M0, c[0][l]);
                let (hi1, lo1) = mulhilo(M1, c[2][l]);
                next[0][l] = hi1 ^ c[1][l] ^ k[0];
                next[1][l] = lo1;
                next[2][l] = hi0 ^ c[3][l] ^ k[1];
                next[3][l] = lo0;
            }
            c = next;
        }
        let mut z = [[0f32; LANES]; 4];
        for l in 0..LANES {
            (z[0][l], z[1][l]) = box_muller(c[0][l], c[1][l]);
            (z[2][l], z[3][l]) = box_muller(c[2][l], c[3][l]);
        }
        for (l, draws) in group.chunks_exact_mut(4).enumerate() {
            draws.copy_from_slice(&[z[0][l], z[1][l], z[2][l], z[3][l]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32_10).
    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(
            philox4x32_10([0, 0, 0, 0], [0, 0]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn fill_agrees_with_single_draws_at_any_offset() {
        // Starts in every lane of a block; lengths with no whole block, exactly one group of
        // 64, groups plus a tail, and many groups.
        for start in [0u64, 1, 2, 3, 5, 1 << 33] {
            for len in [0usize, 1, 3, 11, 64, 67, 131, 1000] {
                let mut buf = vec![f32::NAN; len];
                fill_normal(7, 3, start, &mut buf);
                for (i, v) in buf.iter().enumerate() {
                    let want = normal(7, 3, start + i as u64);
                    assert_eq!(
                        v.to_bits(),
                        want.to_bits(),
                        "start {start} len {len} draw {i}"
                    );
                }
            }
        }
    }

    /// Box–Muller through the Cephes polynomials against the same formula in f64 (the same
    /// f32 uniforms and angle) over every 16th of the 2²⁴ values of u₁, with scattered angles,
    /// and the edges: u₁ = 1 (radius 0), u₁ = 2⁻²⁴ (the largest radius, 5.77), angles 0 and
    /// just below 2π. The full sweep of all 2²⁴ gave 7.2e-7 (about 1 ulp at |z| ≈ 4).
    #[test]
    fn box_muller_is_within_a_few_ulp_of_the_exact_formula() {
        let exact = |a: u32, b: u32| {
            let radius = (-2.0 * (uniform_open_closed(a) as f64).ln()).sqrt();
            let angle = (uniform_closed_open(b) * std::f32::consts::TAU) as f64;
            (radius * angle.cos(), radius * angle.sin())
        };
        let mut worst = 0f64;
        let pairs = (0..1u32 << 20)
            .map(|k| (k << 12, k.wrapping_mul(2_654_435_761) & 0xFFFF_FF00))
            .chain([
                (u32::MAX, 0),
                (0, 0),
                (0, u32::MAX),
                (0x8000_0000, 0x4000_0000),
            ]);
        for (a, b) in pairs {
            let (c, s) = box_muller(a, b);
            let (ec, es) = exact(a, b);
            assert!(c.is_finite() && s.is_finite());
            worst = worst.max((c as f64 - ec).abs()).max((s as f64 - es).abs());
        }
        assert!(worst <= 1e-6, "max |box_muller - exact| = {worst:e}");
        assert!(worst > 0.0, "an f32 evaluation cannot be exact everywhere");
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut buf = vec![0.0f32; 1 << 16];
        fill_normal(42, 0, 0, &mut buf);
        let n = buf.len() as f64;
        let mean = buf.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = buf.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 1/sqrt(n) = 0.004 for the mean, sqrt(2/n) = 0.0055 for the variance.
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "variance {var}");
        assert!(buf.iter().all(|v| v.is_finite()));
    }
}
