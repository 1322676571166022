// 2-D average pool (NCHW) with PyTorch's divisor rules, and global average pool.
//   hstart = oh·sh − ph; hend = min(hstart + kh, H + ph); pool_h = hend − hstart;
//   rows = [max(hstart, 0), min(hend, H)) (same for columns);
//   divisor = pool_h·pool_w if count_include_pad else |rows|·|cols|; an empty window gives 0.
// With ceil_mode the host's geometry already dropped windows that would start in the padding.
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y.
//   avgpool2d_fwd          one invocation per output element: its window's sum / divisor.
//   avgpool2d_bwd          one invocation per input element: Σ dy / divisor over the windows
//                          that hold it, gathered in row-major window order (no atomics).
//   global_avgpool2d_fwd   one workgroup per (n, c) plane: tree reduction, times 1/(H·W).
//   global_avgpool2d_bwd   one invocation per input element: dy of its plane times 1/(H·W).
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    batch: u32,
    channels: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    count_include_pad: u32,
    // 1 / (H·W), rounded to f32 by the host as the CPU does.
    inv_plane: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read_write> y: array<stored>;
@group(0) @binding(5) var<storage, read> dy: array<stored>;

var<workgroup> partial: array<f32, 256>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

// The input range [start, end) of window o along one axis, and its length counting padding.
fn window(o: u32, stride: u32, pad: u32, kernel: u32, size: u32) -> vec3<i32> {
    let start = i32(o * stride) - i32(pad);
    let end = min(start + i32(kernel), i32(size + pad));
    return vec3<i32>(max(start, 0), min(end, i32(size)), end - start);
}

fn divisor(rows: vec3<i32>, cols: vec3<i32>) -> f32 {
    if p.count_include_pad != 0u {
        return f32(rows.z * cols.z);
    }
    return f32((rows.y - rows.x) * (cols.y - cols.x));
}

@compute @workgroup_size(256)
fn avgpool2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    let out_plane = p.out_h * p.out_w;
    if e >= p.batch * p.channels * out_plane {
        return;
    }
    let plane = e / out_plane;
    let rows = window((e % out_plane) / p.out_w, p.stride_h, p.pad_h, p.kernel_h, p.in_h);
    let cols = window(e % p.out_w, p.stride_w, p.pad_w, p.kernel_w, p.in_w);
    if rows.x >= rows.y || cols.x >= cols.y {
        y[e] = stored(0.0);
        return;
    }
    let x_base = plane * p.in_h * p.in_w;
    var s = 0.0;
    for (var ih = rows.x; ih < rows.y; ih++) {
        for (var iw = cols.x; iw < cols.y; iw++) {
            s += f32(x[x_base + u32(ih) * p.in_w + u32(iw)]);
        }
    }
    y[e] = stored(s / divisor(rows, cols));
}

@compute @workgroup_size(256)
fn avgpool2d_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    let in_plane = p.in_h * p.in_w;
    if e >= p.batch * p.channels * in_plane {
        return;
    }
    let plane = e / in_plane;
    let ih = i32((e % in_plane) / p.in_w);
    let iw = i32(e % p.in_w);
    // Windows o with o·s − pad <= i < o·s − pad + k.
    let oh_lo = max(ih + i32(p.pad_h) - i32(p.kernel_h) + i32(p.stride_h), 0) / i32(p.stride_h);
    let oh_hi = min((ih + i32(p.pad_h)) / i32(p.stride_h), i32(p.out_h) - 1);
    let ow_lo = max(iw + i32(p.pad_w) - i32(p.kernel_w) + i32(p.stride_w), 0) / i32(p.stride_w);
    let ow_hi = min((iw + i32(p.pad_w)) / i32(p.stride_w), i32(p.out_w) - 1);
    let out_base = plane * p.out_h * p.out_w;
    var s = 0.0;
    for (var oh = oh_lo; oh <= oh_hi; oh++) {
        let rows = window(u32(oh), p.stride_h, p.pad_h, p.kernel_h, p.in_h);
        for (var ow = ow_lo; ow <= ow_hi; ow++) {
            let cols = window(u32(ow), p.stride_w, p.pad_w, p.kernel_w, p.in_w);
            s += f32(dy[out_base + u32(oh) * p.out_w + u32(ow)]) / divisor(rows, cols);
        }
    }
    y[e] = stored(s);
}

@compute @workgroup_size(256)
fn global_avgpool2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let plane = wid.y * nwg.x + wid.x;
    let in_plane = p.in_h * p.in_w;
    let live = plane < p.batch * p.channels;
    var s = 0.0;
    if live {
        for (var k = lid; k < in_plane; k += 256u) {
            s += f32(x[plane * in_plane + k]);
        }
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if lid == 0u && live {
        y[plane] = stored(partial[0] * p.inv_plane);
    }
}

@compute @workgroup_size(256)
fn global_avgpool2d_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    let in_plane = p.in_h * p.in_w;
    if e >= p.batch * p.channels * in_plane {
        return;
    }
    y[e] = stored(f32(dy[e / in_plane]) * p.inv_plane);
}
