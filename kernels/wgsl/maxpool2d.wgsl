// 2-D max pool (NCHW) with PyTorch's CPU semantics: padding is never selected; the first maximum
// in row-major scan order wins ties; a NaN is selected (the condition is `v > best || isnan(v)`,
// so the last NaN of a window wins); a window with no input element gives -inf and no argmax
// (0xffffffff). argmax = ih·W + iw inside the input plane.
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y.
//   maxpool2d_fwd  one invocation per output element (n, c, oh, ow): scans its window.
//   maxpool2d_bwd  one invocation per input element (n, c, ih, iw): gathers, instead of
//                  scattering with atomics, the dy of every window whose argmax is this element,
//                  in row-major window order (so the sum is the CPU's, term for term).
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
    inv_plane: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read_write> y: array<stored>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(4) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(5) var<storage, read> dy: array<stored>;

const NO_ARGMAX: u32 = 0xffffffffu;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(256)
fn maxpool2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    let out_plane = p.out_h * p.out_w;
    if e >= p.batch * p.channels * out_plane {
        return;
    }
    let plane = e / out_plane;
    let oh = (e % out_plane) / p.out_w;
    let ow = e % p.out_w;
    let x_base = plane * p.in_h * p.in_w;
    let h0 = i32(oh * p.stride_h) - i32(p.pad_h);
    let w0 = i32(ow * p.stride_w) - i32(p.pad_w);
    var best = bitcast<f32>(0xff800000u);
    var best_at = NO_ARGMAX;
    for (var i = 0u; i < p.kernel_h; i++) {
        let ih = h0 + i32(i * p.dilation_h);
        if ih < 0 || ih >= i32(p.in_h) {
            continue;
        }
        for (var j = 0u; j < p.kernel_w; j++) {
            let iw = w0 + i32(j * p.dilation_w);
            if iw < 0 || iw >= i32(p.in_w) {
                continue;
            }
            let at = u32(ih) * p.in_w + u32(iw);
            let v = f32(x[x_base + at]);
            // As PyTorch: the first tap inside the input is the answer for an all -inf window.
            if best_at == NO_ARGMAX {
                best_at = at;
            }
            if v > best || is_nan(v) {
                best = v;
                best_at = at;
            }
        }
    }
    y[e] = stored(best);
    argmax[e] = best_at;
}

@compute @workgroup_size(256)
fn maxpool2d_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    let in_plane = p.in_h * p.in_w;
    if e >= p.batch * p.channels * in_plane {
        return;
    }
    let plane = e / in_plane;
    let at = e % in_plane;
    let ih = at / p.in_w;
    let iw = at % p.in_w;
    let out_base = plane * p.out_h * p.out_w;
    var s = 0.0;
    // Taps from last to first visit windows from first to last.
    for (var i = i32(p.kernel_h) - 1; i >= 0; i--) {
        let nh = i32(ih + p.pad_h) - i * i32(p.dilation_h);
        if nh < 0 || u32(nh) % p.stride_h != 0u || u32(nh) / p.stride_h >= p.out_h {
            continue;
        }
        let oh = u32(nh) / p.stride_h;
        for (var j = i32(p.kernel_w) - 1; j >= 0; j--) {
            let nw = i32(iw + p.pad_w) - j * i32(p.dilation_w);
            if nw < 0 || u32(nw) % p.stride_w != 0u || u32(nw) / p.stride_w >= p.out_w {
                continue;
            }
            let o = out_base + oh * p.out_w + u32(nw) / p.stride_w;
            if argmax_in[o] == at {
                s += f32(dy[o]);
            }
        }
    }
    y[e] = stored(s);
}
