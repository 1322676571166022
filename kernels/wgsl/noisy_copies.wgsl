// SmoothGrad's batch of noisy copies, with the noise generated here: Philox4x32-10 (Salmon et
// al., SC'11) and Box–Muller, the same integer stream and the same f32 formulas as the CPU's
// `rng.rs`. Draw e of copy i is a pure function of (seed, i, e): counter = (e / 4 low, e / 4 high,
// copy index, 0), key = (seed low, seed high); words 0, 1 give draws 4b, 4b+1 and words 2, 3
// give 4b+2, 4b+3. log and sin/cos are evaluated by the polynomials of Cephes (logf, sinf/cosf)
// in plain f32 arithmetic, with compensated final sums, rather than by the builtins, whose
// precision varies between drivers (Vulkan allows 2^-11 absolute error for sin/cos).
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y.
//   noisy_copies_fwd  one invocation per (copy i, block b of 4 elements): out[i, 4b..4b+4] =
//                     x[4b..4b+4] + sigma · normal(seed, first + i, 4b..4b+4).
//   noisy_copies_given_fwd  one invocation per output element: out[i, e] = x[e] + sigma ·
//                     g[first + i, e], replaying given draws (another framework's noise).
//   noisy_copies_bwd  one invocation per element e: sum[e] += Σ_i g[i, e], sumsq[e] += Σ_i g[i, e]²
//                     (the backward of the copies, also SmoothGrad²'s and VarGrad's reduction).
//   normal_fwd        one invocation per block of 4: out[e] = normal(seed, stream = first, e).
//   philox_fwd        one invocation per counter: bits[4t..4t+4] = Philox(counters[4t..4t+4], key).
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    // Elements of one copy (noisy_copies_*), of the output (normal_fwd), or counters (philox_fwd).
    elements: u32,
    count: u32,
    first: u32,
    seed_lo: u32,
    seed_hi: u32,
    sigma: f32,
    // Always 0: makes `opaque` a value the shader compiler cannot see through.
    zero: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read> counters: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<stored>;
@group(0) @binding(4) var<storage, read_write> bits: array<u32>;
@group(0) @binding(5) var<storage, read> g: array<stored>;
@group(0) @binding(6) var<storage, read_write> sum: array<f32>;
@group(0) @binding(7) var<storage, read_write> sumsq: array<f32>;

const M0: u32 = 0xD2511F53u;
const M1: u32 = 0xCD9E8D57u;
const W0: u32 = 0x9E3779B9u;
const W1: u32 = 0xBB67AE85u;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// High 32 bits of the 64-bit product a·b, from 16-bit halves (WGSL has no 64-bit integers).
fn mul_hi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if round > 0u {
            k += vec2<u32>(W0, W1);
        }
        let hi0 = mul_hi(M0, c.x);
        let lo0 = M0 * c.x;
        let hi1 = mul_hi(M1, c.z);
        let lo1 = M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// `v`, hidden from algebraic simplification: shader compilers (Mesa's NIR among them) may
// rewrite (a + b) − a as b, which would erase the rounding error TwoSum measures.
fn opaque(v: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(v) | p.zero);
}

// a + b as an unevaluated pair (sum, rounding error) (Knuth's TwoSum, additions only).
fn two_sum(a: f32, b: f32) -> vec2<f32> {
    let s = opaque(a + b);
    let bb = opaque(s - a);
    return vec2<f32>(s, (a - (s - bb)) + (b - bb));
}

// Natural logarithm of a positive normal f32: Cephes logf, with the final sum
// e·ln2_hi + m + (tail) compensated so that it is rounded once (about 0.5 ulp).
fn ln(v: f32) -> f32 {
    let parts = frexp(v);
    var e = f32(parts.exp);
    var m = parts.fract;
    if m < 0.70710677 {
        e -= 1.0;
        m = m + m - 1.0;
    } else {
        m = m - 1.0;
    }
    let z = m * m;
    var y = 7.0376836292e-2;
    y = y * m - 1.1514610310e-1;
    y = y * m + 1.1676998740e-1;
    y = y * m - 1.2420140846e-1;
    y = y * m + 1.4249322787e-1;
    y = y * m - 1.6668057665e-1;
    y = y * m + 2.0000714765e-1;
    y = y * m - 2.4999993993e-1;
    y = y * m + 3.3333331174e-1;
    y = y * m * z;
    y += -2.12194440e-4 * e;
    y += -0.5 * z;
    let head = two_sum(0.693359375 * e, m);
    return head.x + (head.y + y);
}

// (sin a, cos a) for 0 <= a < 2π: Cephes sinf/cosf (octant reduction by three parts of π/4,
// odd degree-7 and even degree-8 polynomials on [-π/4, π/4]), keeping the reduced argument
// as a pair (hi, lo) and compensating the last sums, so each result is rounded about once.
fn sin_cos(a: f32) -> vec2<f32> {
    var j = u32(a * 1.2732395);
    var y = f32(j);
    if (j & 1u) == 1u {
        j += 1u;
        y += 1.0;
    }
    let quadrant = (j >> 1u) & 3u;
    // y·0.78515625 and y·2.4187564849853515625e-4 are exact (y <= 8).
    let r1 = a - y * 0.78515625;
    let r2 = two_sum(r1, -(y * 2.4187564849853515625e-4));
    let r3 = two_sum(r2.x, -(y * 3.77489497744594108e-8));
    let r = r3.x;
    let r_lo = r2.y + r3.y;
    let z = r * r;
    let s_tail = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r;
    let s = r + (s_tail + r_lo);
    let c_tail = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z;
    let c_head = two_sum(1.0, -0.5 * z);
    let c = c_head.x + ((c_head.y + c_tail) - r * r_lo);
    switch quadrant {
        case 0u: {
            return vec2<f32>(s, c);
        }
        case 1u: {
            return vec2<f32>(c, -s);
        }
        case 2u: {
            return vec2<f32>(-s, -c);
        }
        default: {
            return vec2<f32>(-c, s);
        }
    }
}

// Two standard normals from two 32-bit words, exactly as rng::box_muller: uniforms from the top
// 24 bits, u1 in (0, 1], u2 in [0, 1).
fn box_muller(a: u32, b: u32) -> vec2<f32> {
    let u1 = f32((a >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = f32(b >> 8u) * (1.0 / 16777216.0);
    let radius = sqrt(-2.0 * ln(u1));
    // std::f32::consts::TAU, rounded to f32 as on the CPU.
    let angle = bitcast<f32>(0x40c90fdbu) * u2;
    let sc = sin_cos(angle);
    return vec2<f32>(radius * sc.y, radius * sc.x);
}

// Draws 4·block .. 4·block + 3 of stream `stream`.
fn normal4(stream: u32, block: u32) -> vec4<f32> {
    let r = philox4x32_10(vec4<u32>(block, 0u, stream, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
    return vec4<f32>(box_muller(r.x, r.y), box_muller(r.z, r.w));
}

@compute @workgroup_size(256)
fn noisy_copies_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid);
    let blocks = (p.elements + 3u) / 4u;
    if t >= blocks * p.count {
        return;
    }
    let copy = t / blocks;
    let block = t % blocks;
    let z = normal4(p.first + copy, block);
    for (var l = 0u; l < 4u; l++) {
        let e = block * 4u + l;
        if e < p.elements {
            out[copy * p.elements + e] = stored(f32(x[e]) + p.sigma * z[l]);
        }
    }
}

@compute @workgroup_size(256)
fn noisy_copies_given_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid);
    if t >= p.elements * p.count {
        return;
    }
    let e = t % p.elements;
    out[t] = stored(f32(x[e]) + p.sigma * f32(g[p.first * p.elements + t]));
}

@compute @workgroup_size(256)
fn noisy_copies_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.elements {
        return;
    }
    var s = sum[e];
    var s2 = sumsq[e];
    for (var i = 0u; i < p.count; i++) {
        let v = f32(g[i * p.elements + e]);
        s += v;
        s2 += v * v;
    }
    sum[e] = s;
    sumsq[e] = s2;
}

@compute @workgroup_size(256)
fn normal_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let block = flat_index(wid, nwg, lid);
    if block * 4u >= p.elements {
        return;
    }
    let z = normal4(p.first, block);
    for (var l = 0u; l < 4u; l++) {
        let e = block * 4u + l;
        if e < p.elements {
            out[e] = stored(z[l]);
        }
    }
}

@compute @workgroup_size(256)
fn philox_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid);
    if t >= p.elements {
        return;
    }
    let c = vec4<u32>(counters[4u * t], counters[4u * t + 1u], counters[4u * t + 2u], counters[4u * t + 3u]);
    let r = philox4x32_10(c, vec2<u32>(p.seed_lo, p.seed_hi));
    for (var l = 0u; l < 4u; l++) {
        bits[4u * t + l] = r[l];
    }
}
