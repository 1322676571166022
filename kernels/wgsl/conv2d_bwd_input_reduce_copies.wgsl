// SmoothGrad's last backward kernel: the input gradient of a convolution over a batch of noisy
// copies, reduced over the copies as it is produced. For one input element e = (c, ih, iw) of
// the (single-sample) input:  sum[e] += Σ_n dx_n[e],  sumsq[e] += Σ_n dx_n[e]²,  where dx_n is
// the input gradient of copy n. The batch·C·H·W gradient is never written.
//
// Launch: workgroup 256, dispatch (ceil(H·W / 256), C, 1): workgroup (x, c) takes 256 pixels of
// input channel c. Each invocation loops over the copies (batch), computing its pixel's
// gradient of copy n by gathering dY over the O/g output channels of c's group and the taps that
// read the pixel, then accumulates Σ and Σ². The weights W[o, c, :, :] of those output channels
// are staged once in workgroup memory when they fit (O/g·kh·kw ≤ 3072 floats, 12 KiB), and read
// from the storage buffer otherwise.
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

const CACHE: u32 = 3072u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read> w: array<stored>;
@group(0) @binding(4) var<storage, read> dy: array<stored>;
@group(0) @binding(5) var<storage, read_write> sum: array<f32>;
@group(0) @binding(7) var<storage, read_write> sumsq: array<f32>;

var<workgroup> w_cache: array<f32, 3072>;

@compute @workgroup_size(256)
fn conv2d_bwd_input_reduce_copies(@builtin(workgroup_id) wid: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let c = wid.y;
    let q = wid.x * 256u + lid;
    let plane = p.in_h * p.in_w;
    let cg = p.in_channels / p.groups;
    let og = p.out_channels / p.groups;
    let g = c / cg;
    let c_local = c % cg;
    let taps = p.kernel_h * p.kernel_w;
    let cached = og * taps <= CACHE;
    if cached {
        // w_cache[m·taps + tap] = W[g·og + m, c_local, tap]
        for (var k = lid; k < og * taps; k += 256u) {
            w_cache[k] = f32(w[((g * og + k / taps) * cg + c_local) * taps + k % taps]);
        }
    }
    workgroupBarrier();
    if q >= plane {
        return;
    }
    let ih = q / p.in_w;
    let iw = q % p.in_w;
    let e = c * plane + q;
    var s = sum[e];
    var s2 = sumsq[e];
    for (var n = 0u; n < p.batch; n++) {
        var d = 0.0;
        for (var m = 0u; m < og; m++) {
            let o = g * og + m;
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
                    let tap = i * p.kernel_w + j;
                    var wv: f32;
                    if cached {
                        wv = w_cache[m * taps + tap];
                    } else {
                        wv = f32(w[(o * cg + c_local) * taps + tap]);
                    }
                    d += wv * f32(dy[dy_base + oh * p.out_w + ow]);
                }
            }
        }
        s += d;
        s2 += d * d;
    }
    sum[e] = s;
    sumsq[e] = s2;
}
