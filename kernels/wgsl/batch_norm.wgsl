// Batch normalisation in inference form (running statistics, `model.eval()`), channels on axis 1
// of x[N, C, ...]: y = (x − mean) · inv_std · γ + β with inv_std = 1 / sqrt(var + eps), the CPU's
// order of operations. Its input gradient is dx = dy · (inv_std · γ).
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y. One invocation per element.
//   batch_norm_fwd  y[e] from x[e] and the statistics of its channel.
//   batch_norm_bwd  dx[e] from dy[e].
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    len: u32,
    channels: u32,
    // Elements per channel plane: the product of the dimensions after C.
    inner: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read> gamma: array<stored>;
@group(0) @binding(3) var<storage, read> beta: array<stored>;
@group(0) @binding(4) var<storage, read> mean: array<stored>;
@group(0) @binding(5) var<storage, read> variance: array<stored>;
@group(0) @binding(6) var<storage, read_write> y: array<stored>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn inv_std(c: u32) -> f32 {
    return 1.0 / sqrt(f32(variance[c]) + p.eps);
}

@compute @workgroup_size(256)
fn batch_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.len {
        return;
    }
    let c = (e / p.inner) % p.channels;
    let normalised = (f32(x[e]) - f32(mean[c])) * inv_std(c);
    y[e] = stored(normalised * f32(gamma[c]) + f32(beta[c]));
}

// Here `x` holds dy.
@compute @workgroup_size(256)
fn batch_norm_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.len {
        return;
    }
    let c = (e / p.inner) % p.channels;
    y[e] = stored(f32(x[e]) * (inv_std(c) * f32(gamma[c])));
}
