//! Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11) and Box–Muller.
//!
//! A draw is a pure function of (seed, stream, index), with no state carried between calls, so
//! any backend, any thread and any split of a batch into chunks produces the same numbers.
//! SmoothGrad keys its noise by (seed, copy index, element index) through [`normal`].

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline]
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
#[inline]
fn uniform_open_closed(bits: u32) -> f32 {
    ((bits >> 8) + 1) as f32 * (1.0 / 16_777_216.0)
}

/// A uniform in [0, 1) from the top 24 bits of `bits` (exact in f32).
#[inline]
fn uniform_closed_open(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Two independent standard normals from two 32-bit words (Box–Muller, f32 arithmetic).
#[inline]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let radius = (-2.0 * uniform_open_closed(a).ln()).sqrt();
    let angle = std::f32::consts::TAU * uniform_closed_open(b);
    (radius * angle.cos(), radius * angle.sin())
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

/// Fills `out` with draws `start..start + out.len()` of stream `stream`, four at a time.
pub fn fill_normal(seed: u64, stream: u32, start: u64, out: &mut [f32]) {
    let mut index = start;
    let mut i = 0;
    while i < out.len() {
        let lane = (index % 4) as usize;
        let block = normal4(seed, stream, index / 4);
        // Whole blocks as a fixed-size copy (a variable-length one is a `memcpy` call per 4
        // values).
        if lane == 0
            && let Some(dst) = out.get_mut(i..i + 4)
        {
            dst.copy_from_slice(&block);
            i += 4;
            index += 4;
            continue;
        }
        let take = (4 - lane).min(out.len() - i);
        out[i..i + take].copy_from_slice(&block[lane..lane + take]);
        i += take;
        index += take as u64;
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
        let mut buf = vec![0.0f32; 11];
        fill_normal(7, 3, 5, &mut buf);
        for (i, v) in buf.iter().enumerate() {
            assert_eq!(v.to_bits(), normal(7, 3, 5 + i as u64).to_bits());
        }
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
