// Batch normalisation in inference form (running statistics, `model.eval()`), channels on axis 1
// of x[N, C, ...]: y = (x − mean) · inv_std · γ + β with inv_std = 1 / sqrt(var + eps), the CPU's
// order of operations. Its input gradient is dx = dy · (inv_std · γ).
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y. One invocation per element.
//   batch_norm_fwd  y[e] from x[e] and the statistics of its channel.
//   batch_norm_bwd  dx[e] from dy[e].

struct Params {
    len: u32,
    channels: u32,
    // Elements per channel plane: the product of the dimensions after C.
    inner: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> variance: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn inv_std(c: u32) -> f32 {
    return 1.0 / sqrt(variance[c] + p.eps);
}

@compute @workgroup_size(256)
fn batch_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.len {
        return;
    }
    let c = (e / p.inner) % p.channels;
    let normalised = (x[e] - mean[c]) * inv_std(c);
    y[e] = normalised * gamma[c] + beta[c];
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
    y[e] = x[e] * (inv_std(c) * gamma[c]);
}
