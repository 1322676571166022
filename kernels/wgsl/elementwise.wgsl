// Elementwise ops on tensors of one shape, and the sum over the batch axis.
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y.
//   add_fwd        one invocation per element: out = a + b (same shape).
//   sum_batch_fwd  one invocation per element e of one sample: out[e] = Σ_n a[n, e], summed in
//                  batch order as the CPU (the bias gradient of a linear layer is this sum).
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    len: u32,
    batch: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<stored>;
@group(0) @binding(2) var<storage, read> b: array<stored>;
@group(0) @binding(3) var<storage, read_write> out: array<stored>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn add_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e < p.len {
        out[e] = stored(f32(a[e]) + f32(b[e]));
    }
}

// `len` is the element count of one sample.
@compute @workgroup_size(256)
fn sum_batch_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.len {
        return;
    }
    var s = 0.0;
    for (var n = 0u; n < p.batch; n++) {
        s += f32(a[n * p.len + e]);
    }
    out[e] = stored(s);
}
