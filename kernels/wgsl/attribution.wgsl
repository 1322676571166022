// Grad×Input and Integrated Gradients over a batch of (noisy) copies, each ending in the
// reduction over copies: Σ and Σ² of the per-copy attributions, added into f32 `sum` and `sumsq`
// in copy order, as the CPU explainer adds them. E is the element count of one sample.
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y.
//   grad_x_input_bwd   one invocation per element e: for copies i < count, a = x[i, e] · g[i, e];
//                      sum[e] += Σ a, sumsq[e] += Σ a².
//   ig_path_fwd        one invocation per element t of the [count, E] output: row j is path
//                      point q = first_point + j, step s = q % steps of copy q / steps:
//                      out[j, e] = b[e] + α[s] · (x[q / steps − first_copy, e] − b[e]).
//   ig_accumulate_bwd  one invocation per element e, points j < count in order:
//                      integral[e] += w[s] · g[j, e]; after a copy's last step,
//                      a = (x[copy − first_copy, e] − b[e]) · integral[e], sum[e] += a,
//                      sumsq[e] += a², integral[e] = 0 (a copy's points may span launches).
// x holds the copies `first_copy..`; `coefficients` holds α (path) or the weights (accumulate).

// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    elements: u32,
    count: u32,
    steps: u32,
    first_point: u32,
    first_copy: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read> g: array<stored>;
@group(0) @binding(3) var<storage, read> baseline: array<stored>;
@group(0) @binding(4) var<storage, read> coefficients: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<stored>;
@group(0) @binding(6) var<storage, read_write> integral: array<f32>;
@group(0) @binding(7) var<storage, read_write> sum: array<f32>;
@group(0) @binding(8) var<storage, read_write> sumsq: array<f32>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

@compute @workgroup_size(256)
fn grad_x_input_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.elements {
        return;
    }
    var s = sum[e];
    var q = sumsq[e];
    for (var i = 0u; i < p.count; i++) {
        let a = f32(x[i * p.elements + e]) * f32(g[i * p.elements + e]);
        s += a;
        q += a * a;
    }
    sum[e] = s;
    sumsq[e] = q;
}

@compute @workgroup_size(256)
fn ig_path_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let t = flat_index(wid, nwg, lid);
    if t >= p.count * p.elements {
        return;
    }
    let e = t % p.elements;
    let q = p.first_point + t / p.elements;
    let copy = q / p.steps - p.first_copy;
    let b = f32(baseline[e]);
    out[t] = stored(b + coefficients[q % p.steps] * (f32(x[copy * p.elements + e]) - b));
}

@compute @workgroup_size(256)
fn ig_accumulate_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.elements {
        return;
    }
    let b = f32(baseline[e]);
    var acc = integral[e];
    var s = sum[e];
    var sq = sumsq[e];
    for (var j = 0u; j < p.count; j++) {
        let q = p.first_point + j;
        acc += coefficients[q % p.steps] * f32(g[j * p.elements + e]);
        if q % p.steps == p.steps - 1u {
            let copy = q / p.steps - p.first_copy;
            let a = (f32(x[copy * p.elements + e]) - b) * acc;
            s += a;
            sq += a * a;
            acc = 0.0;
        }
    }
    integral[e] = acc;
    sum[e] = s;
    sumsq[e] = sq;
}
