// Softmax over the last axis of x[N, K] (numerically stable, as the CPU): y = exp(x − max) / Σ,
// and its backward dx = y · (dy − Σ dy·y).
//
// Launch: workgroup 256, one workgroup per row (row = wid.y · nwg.x + wid.x, the host folding
// more than 65535 rows into y). The 256 invocations stride over the row's K elements and
// combine their partial max / sums by tree reductions in workgroup memory.
//   softmax_fwd  y[row] from x[row].
//   softmax_bwd  dx[row] from y[row] and dy[row].
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    rows: u32,
    len: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read> dy: array<stored>;
@group(0) @binding(3) var<storage, read_write> out: array<stored>;

var<workgroup> partial: array<f32, 256>;

// Tree reduction of `v` over the workgroup: the sum, or the maximum when `take_max`.
fn reduce(v: f32, lid: u32, take_max: bool) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            if take_max {
                partial[lid] = max(partial[lid], partial[lid + stride]);
            } else {
                partial[lid] += partial[lid + stride];
            }
        }
        workgroupBarrier();
    }
    let r = partial[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn softmax_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    let live = row < p.rows;
    let base = row * p.len;
    var m = bitcast<f32>(0xff800000u);
    if live {
        for (var k = lid; k < p.len; k += 256u) {
            m = max(m, f32(x[base + k]));
        }
    }
    m = reduce(m, lid, true);
    var s = 0.0;
    if live {
        for (var k = lid; k < p.len; k += 256u) {
            s += exp(f32(x[base + k]) - m);
        }
    }
    s = reduce(s, lid, false);
    if live {
        for (var k = lid; k < p.len; k += 256u) {
            out[base + k] = stored(exp(f32(x[base + k]) - m) / s);
        }
    }
}

// Here `x` holds the forward output y.
@compute @workgroup_size(256)
fn softmax_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    let live = row < p.rows;
    let base = row * p.len;
    var d = 0.0;
    if live {
        for (var k = lid; k < p.len; k += 256u) {
            d += f32(dy[base + k]) * f32(x[base + k]);
        }
    }
    d = reduce(d, lid, false);
    if live {
        for (var k = lid; k < p.len; k += 256u) {
            out[base + k] = stored(f32(x[base + k]) * (f32(dy[base + k]) - d));
        }
    }
}
