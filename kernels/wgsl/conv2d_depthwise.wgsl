// 2-D convolution with one input channel per group (depthwise, channel multipliers, and
// single-channel inputs), as direct loops: a GEMM over kh·kw-deep products would waste its tiles.
// NCHW activations, OIHW weights [O, 1, kh, kw]; output channel o reads input channel o / (O/g).
//
// Launch: workgroup 256; the flat invocation index is (wid.y · nwg.x + wid.x) · 256 + lid, the
// host folding more than 65535 workgroups into y.
//   conv2d_depthwise_fwd, conv2d_depthwise_fwd_relu  one invocation per output element
//       (n, o, oh, ow): the sum over the kh·kw taps plus bias. The _relu variant also applies
//       ReLU and writes the mask bits; a workgroup's 256 outputs are 8 whole u32 words (the
//       host launches whole words), gathered in workgroup memory and stored by 8 invocations.
//   conv2d_depthwise_bwd_input  one invocation per input element (n, c, ih, iw): the sum over
//       the O/g output channels of c and the taps that read (ih, iw).
//   conv2d_depthwise_bwd_weight one workgroup per weight element (o, i, j): tree reduction of
//       dY·x over batch and output pixels.
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    kernel_h: u32,
    kernel_w: u32,
    out_h: u32,
    out_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dilation_h: u32,
    dilation_w: u32,
    groups: u32,
    z_base: u32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<stored>;
@group(0) @binding(2) var<storage, read> w: array<stored>;
@group(0) @binding(3) var<storage, read> bias: array<stored>;
@group(0) @binding(4) var<storage, read> dy: array<stored>;
@group(0) @binding(5) var<storage, read_write> out: array<stored>;
@group(0) @binding(6) var<storage, read_write> mask: array<u32>;

var<workgroup> words: array<atomic<u32>, 8>;
var<workgroup> partial: array<f32, 256>;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Output element e before ReLU: bias + Σ taps w[o, i, j] · x[n, c, ih, iw].
fn forward_value(e: u32) -> f32 {
    let ow = e % p.out_w;
    let oh = (e / p.out_w) % p.out_h;
    let o = (e / (p.out_w * p.out_h)) % p.out_channels;
    let n = e / (p.out_w * p.out_h * p.out_channels);
    let c = o / (p.out_channels / p.groups);
    let x_base = (n * p.in_channels + c) * p.in_h * p.in_w;
    var s = 0.0;
    if p.has_bias != 0u {
        s = f32(bias[o]);
    }
    for (var i = 0u; i < p.kernel_h; i++) {
        let ih = i32(oh * p.stride_h + i * p.dilation_h) - i32(p.pad_h);
        if ih < 0 || ih >= i32(p.in_h) {
            continue;
        }
        for (var j = 0u; j < p.kernel_w; j++) {
            let iw = i32(ow * p.stride_w + j * p.dilation_w) - i32(p.pad_w);
            if iw < 0 || iw >= i32(p.in_w) {
                continue;
            }
            s += f32(w[(o * p.kernel_h + i) * p.kernel_w + j]) * f32(x[x_base + u32(ih) * p.in_w + u32(iw)]);
        }
    }
    return s;
}

fn output_len() -> u32 {
    return p.batch * p.out_channels * p.out_h * p.out_w;
}

@compute @workgroup_size(256)
fn conv2d_depthwise_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e < output_len() {
        out[e] = stored(forward_value(e));
    }
}

@compute @workgroup_size(256)
fn conv2d_depthwise_fwd_relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if lid < 8u {
        atomicStore(&words[lid], 0u);
    }
    workgroupBarrier();
    if e < output_len() {
        let v = forward_value(e);
        let positive = v > 0.0;
        out[e] = stored(select(0.0, v, positive || is_nan(v)));
        if positive {
            atomicOr(&words[lid / 32u], 1u << (lid % 32u));
        }
    }
    workgroupBarrier();
    if lid < 8u {
        let word = (e - lid) / 32u + lid;
        if word * 32u < output_len() {
            mask[word] = atomicLoad(&words[lid]);
        }
    }
}

@compute @workgroup_size(256)
fn conv2d_depthwise_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let e = flat_index(wid, nwg, lid);
    if e >= p.batch * p.in_channels * p.in_h * p.in_w {
        return;
    }
    let iw = e % p.in_w;
    let ih = (e / p.in_w) % p.in_h;
    let c = (e / (p.in_w * p.in_h)) % p.in_channels;
    let n = e / (p.in_w * p.in_h * p.in_channels);
    let og = p.out_channels / p.groups;
    var s = 0.0;
    for (var m = 0u; m < og; m++) {
        let o = c * og + m;
        let dy_base = (n * p.out_channels + o) * p.out_h * p.out_w;
        for (var i = 0u; i < p.kernel_h; i++) {
            let nh = i32(ih + p.pad_h) - i32(i * p.dilation_h);
            if nh < 0 || u32(nh) % p.stride_h != 0u || u32(nh) / p.stride_h >= p.out_h {
                continue;
            }
            let oh = u32(nh) / p.stride_h;
            for (var j = 0u; j < p.kernel_w; j++) {
                let nw = i32(iw + p.pad_w) - i32(j * p.dilation_w);
                if nw < 0 || u32(nw) % p.stride_w != 0u || u32(nw) / p.stride_w >= p.out_w {
                    continue;
                }
                let ow = u32(nw) / p.stride_w;
                s += f32(w[(o * p.kernel_h + i) * p.kernel_w + j]) * f32(dy[dy_base + oh * p.out_w + ow]);
            }
        }
    }
    out[e] = stored(s);
}

@compute @workgroup_size(256)
fn conv2d_depthwise_bwd_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                               @builtin(local_invocation_index) lid: u32) {
    let weight = wid.y * nwg.x + wid.x;
    let taps = p.kernel_h * p.kernel_w;
    let o = weight / taps;
    let i = (weight % taps) / p.kernel_w;
    let j = weight % p.kernel_w;
    let c = o / (p.out_channels / p.groups);
    let plane = p.out_h * p.out_w;
    var s = 0.0;
    if weight < p.out_channels * taps {
        for (var r = lid; r < p.batch * plane; r += 256u) {
            let n = r / plane;
            let oh = (r % plane) / p.out_w;
            let ow = r % p.out_w;
            let ih = i32(oh * p.stride_h + i * p.dilation_h) - i32(p.pad_h);
            let iw = i32(ow * p.stride_w + j * p.dilation_w) - i32(p.pad_w);
            if ih < 0 || iw < 0 || ih >= i32(p.in_h) || iw >= i32(p.in_w) {
                continue;
            }
            let xv = f32(x[((n * p.in_channels + c) * p.in_h + u32(ih)) * p.in_w + u32(iw)]);
            s += f32(dy[(n * p.out_channels + o) * plane + r % plane]) * xv;
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
    if lid == 0u && weight < p.out_channels * taps {
        out[weight] = stored(partial[0]);
    }
}
