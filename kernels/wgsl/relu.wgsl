// ReLU and clamp (ReLU6 is clamp(x, 0, 6)), each saving one bit per element for its backward,
// and the masked backward shared by both (with guided backpropagation as an option).
// Masks are u32 words: bit e % 32 of word e / 32 belongs to element e (the same bits, in the
// same order, as the CPU's u64 BitMask read as little-endian u32 pairs).
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y. One invocation per element.
//   relu_fwd   y = x if x > 0 or x is NaN, else 0; mask bit = x > 0.
//   clamp_fwd  y = low if x < low, high if x > high, else x (NaN passes); bit = low < x < high.
//     A workgroup's 256 elements are 8 whole mask words: bits are gathered in workgroup memory,
//     then stored by 8 invocations, with no global atomics.
//   relu_bwd   dx = dy where the bit is set (and, when guided, dy > 0), else 0. Also clamp's.
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    len: u32,
    guided: u32,
    low: f32,
    high: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read_write> y: array<stored>;
@group(0) @binding(3) var<storage, read_write> mask: array<u32>;
@group(0) @binding(4) var<storage, read> mask_in: array<u32>;
@group(0) @binding(5) var<storage, read> dy: array<stored>;

var<workgroup> words: array<atomic<u32>, 8>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Stores the workgroup's 8 mask words (invocations 0..8, after the bits are in `words`).
fn store_words(e: u32, lid: u32) {
    workgroupBarrier();
    if lid < 8u {
        let word = (e - lid) / 32u + lid;
        if word * 32u < p.len {
            mask[word] = atomicLoad(&words[lid]);
        }
    }
}

@compute @workgroup_size(256)
fn relu_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if lid < 8u {
        atomicStore(&words[lid], 0u);
    }
    workgroupBarrier();
    if e < p.len {
        let v = f32(x[e]);
        let positive = v > 0.0;
        y[e] = stored(select(0.0, v, positive || is_nan(v)));
        if positive {
            atomicOr(&words[lid / 32u], 1u << (lid % 32u));
        }
    }
    store_words(e, lid);
}

@compute @workgroup_size(256)
fn clamp_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if lid < 8u {
        atomicStore(&words[lid], 0u);
    }
    workgroupBarrier();
    if e < p.len {
        let v = f32(x[e]);
        var clamped = v;
        // NaN is tested by its bits: some drivers fold the comparisons below into min/max,
        // which would replace it.
        if is_nan(v) {
            clamped = v;
        } else if v < p.low {
            clamped = p.low;
        } else if v > p.high {
            clamped = p.high;
        }
        y[e] = stored(clamped);
        if v > p.low && v < p.high {
            atomicOr(&words[lid / 32u], 1u << (lid % 32u));
        }
    }
    store_words(e, lid);
}

@compute @workgroup_size(256)
fn relu_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.len {
        return;
    }
    let g = f32(dy[e]);
    let keep = ((mask_in[e / 32u] >> (e % 32u)) & 1u) == 1u && (p.guided == 0u || g > 0.0);
    y[e] = stored(select(0.0, g, keep));
}
