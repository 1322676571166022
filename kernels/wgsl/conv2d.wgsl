// 2-D convolution as an implicit GEMM (NCHW activations, OIHW weights, as PyTorch), with any
// stride, padding (top, left), dilation and groups. The column matrix is never formed: tiles of it
// are read straight from the input (or, for the input gradient, gathered from dY).
//
// Launch of the GEMM entry points: workgroup 16×16 = 256 invocations, dispatch
// (ceil(N / 64), ceil(M / 64), Z), split by the host into dispatches of at most 65535 along z
// (`z_base` is the first z of a dispatch):
//   conv2d_fwd, conv2d_fwd_relu  M = O/g (output channels),  N = OH·OW,  K = C/g·kh·kw,  Z = batch·groups
//   conv2d_bwd_input             M = C/g (input channels),   N = H·W,    K = O/g·kh·kw,  Z = batch·groups
//   conv2d_bwd_weight            M = O/g,  N = C/g·kh·kw,  K = batch·OH·OW,  Z = groups
// Each invocation computes a 4×4 block of its workgroup's 64×64 output tile, looping over K in
// steps of 16 through two workgroup tiles (A 16×64 and B 16×64 floats, 8 KiB in all).
// conv2d_fwd_relu also applies ReLU and sets bit e of `mask` (u32 words) where output e > 0.
//
// conv2d_bwd_bias: workgroup 256, one workgroup per output channel (dispatch folded into x, y);
// the workgroup sums dY over batch and pixels with a tree reduction.
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
@group(0) @binding(6) var<storage, read_write> mask: array<atomic<u32>>;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;
const MODE_FWD: u32 = 0u;
const MODE_BWD_INPUT: u32 = 1u;
const MODE_BWD_WEIGHT: u32 = 2u;

var<workgroup> tile_a: array<f32, 1024>; // [DEPTH][TILE]: tile_a[k·64 + m]
var<workgroup> tile_b: array<f32, 1024>; // [DEPTH][TILE]: tile_b[k·64 + n]
var<workgroup> partial: array<f32, 256>;

fn taps() -> u32 {
    return p.kernel_h * p.kernel_w;
}

fn channels_per_group() -> u32 {
    return p.in_channels / p.groups;
}

fn outputs_per_group() -> u32 {
    return p.out_channels / p.groups;
}

// Column-matrix entry (row k = (c·kh + i)·kw + j, column q = oh·OW + ow) of sample n, group g:
// the input pixel that tap (i, j) of output pixel q reads, 0 in the padding.
fn im2col(n: u32, g: u32, k: u32, q: u32) -> f32 {
    let t = taps();
    let c = k / t;
    let tap = k % t;
    let i = tap / p.kernel_w;
    let j = tap % p.kernel_w;
    let oh = q / p.out_w;
    let ow = q % p.out_w;
    let ih = i32(oh * p.stride_h + i * p.dilation_h) - i32(p.pad_h);
    let iw = i32(ow * p.stride_w + j * p.dilation_w) - i32(p.pad_w);
    if ih < 0 || iw < 0 || ih >= i32(p.in_h) || iw >= i32(p.in_w) {
        return 0.0;
    }
    let channel = n * p.in_channels + g * channels_per_group() + c;
    return f32(x[(channel * p.in_h + u32(ih)) * p.in_w + u32(iw)]);
}

// The dY entry that reaches input pixel q = ih·W + iw through output channel o and tap (i, j),
// with k = (o·kh + i)·kw + j; 0 when no output pixel reads q through that tap.
fn dy_gather(n: u32, g: u32, k: u32, q: u32) -> f32 {
    let t = taps();
    let o = k / t;
    let tap = k % t;
    let i = tap / p.kernel_w;
    let j = tap % p.kernel_w;
    let ih = q / p.in_w;
    let iw = q % p.in_w;
    let nh = i32(ih + p.pad_h) - i32(i * p.dilation_h);
    let nw = i32(iw + p.pad_w) - i32(j * p.dilation_w);
    if nh < 0 || nw < 0 {
        return 0.0;
    }
    let uh = u32(nh);
    let uw = u32(nw);
    if uh % p.stride_h != 0u || uw % p.stride_w != 0u {
        return 0.0;
    }
    let oh = uh / p.stride_h;
    let ow = uw / p.stride_w;
    if oh >= p.out_h || ow >= p.out_w {
        return 0.0;
    }
    let channel = n * p.out_channels + g * outputs_per_group() + o;
    return f32(dy[(channel * p.out_h + oh) * p.out_w + ow]);
}

// Element (m, k) of the left operand.
fn load_a(mode: u32, z: u32, m: u32, k: u32) -> f32 {
    let og = outputs_per_group();
    let t = taps();
    switch mode {
        case MODE_FWD: {
            // W_g[m, k]
            let g = z % p.groups;
            return f32(w[(g * og + m) * channels_per_group() * t + k]);
        }
        case MODE_BWD_INPUT: {
            // W_gᵀ: row m = input channel, k = o·taps + tap
            let g = z % p.groups;
            let o = k / t;
            return f32(w[((g * og + o) * channels_per_group() + m) * t + k % t]);
        }
        default: {
            // dY_g[m, (n, q)] with k = n·P + q
            let plane = p.out_h * p.out_w;
            let n = k / plane;
            return f32(dy[(n * p.out_channels + z * og + m) * plane + k % plane]);
        }
    }
}

// Element (k, col) of the right operand.
fn load_b(mode: u32, z: u32, k: u32, col: u32) -> f32 {
    switch mode {
        case MODE_FWD: {
            return im2col(z / p.groups, z % p.groups, k, col);
        }
        case MODE_BWD_INPUT: {
            return dy_gather(z / p.groups, z % p.groups, k, col);
        }
        default: {
            let plane = p.out_h * p.out_w;
            return im2col(k / plane, z, col, k % plane);
        }
    }
}

// acc[i·4 + j] = Σ_k A[row0 + ly·4 + i, k] · B[k, col0 + lx·4 + j] over the whole K.
fn gemm(mode: u32, z: u32, m_size: u32, n_size: u32, k_size: u32, row0: u32, col0: u32,
        lid: vec3<u32>, acc: ptr<function, array<f32, 16>>) {
    let t = lid.y * 16u + lid.x;
    for (var k0 = 0u; k0 < k_size; k0 += DEPTH) {
        for (var e = 0u; e < 4u; e++) {
            let flat = e * 256u + t;
            let kk = flat / TILE;
            let mn = flat % TILE;
            let k = k0 + kk;
            var a = 0.0;
            if row0 + mn < m_size && k < k_size {
                a = load_a(mode, z, row0 + mn, k);
            }
            tile_a[flat] = a;
            var b = 0.0;
            if col0 + mn < n_size && k < k_size {
                b = load_b(mode, z, k, col0 + mn);
            }
            tile_b[flat] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = tile_a[kk * TILE + lid.y * 4u + i];
                bv[i] = tile_b[kk * TILE + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    (*acc)[i * 4u + j] += av[i] * bv[j];
                }
            }
        }
        workgroupBarrier();
    }
}

// Output value of row m, column q of a forward tile: accumulator plus bias.
fn biased(g: u32, m: u32, v: f32) -> f32 {
    if p.has_bias != 0u {
        return v + f32(bias[g * outputs_per_group() + m]);
    }
    return v;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

@compute @workgroup_size(16, 16)
fn conv2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = p.z_base + wid.z;
    let n = z / p.groups;
    let g = z % p.groups;
    let og = outputs_per_group();
    let plane = p.out_h * p.out_w;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    var acc: array<f32, 16>;
    gemm(MODE_FWD, z, og, plane, channels_per_group() * taps(), row0, col0, lid, &acc);
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let q = col0 + lid.x * 4u + j;
            if m < og && q < plane {
                out[(n * p.out_channels + g * og + m) * plane + q] = stored(biased(g, m, acc[i * 4u + j]));
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv2d_fwd_relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = p.z_base + wid.z;
    let n = z / p.groups;
    let g = z % p.groups;
    let og = outputs_per_group();
    let plane = p.out_h * p.out_w;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    var acc: array<f32, 16>;
    gemm(MODE_FWD, z, og, plane, channels_per_group() * taps(), row0, col0, lid, &acc);
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid.y * 4u + i;
        // Bits of consecutive outputs are gathered per word before one atomic OR.
        var word = 0xffffffffu;
        var bits = 0u;
        for (var j = 0u; j < 4u; j++) {
            let q = col0 + lid.x * 4u + j;
            if m < og && q < plane {
                let e = (n * p.out_channels + g * og + m) * plane + q;
                let v = biased(g, m, acc[i * 4u + j]);
                let positive = v > 0.0;
                out[e] = stored(select(0.0, v, positive || is_nan(v)));
                if e / 32u != word {
                    if bits != 0u {
                        atomicOr(&mask[word], bits);
                    }
                    word = e / 32u;
                    bits = 0u;
                }
                bits |= select(0u, 1u << (e % 32u), positive);
            }
        }
        if bits != 0u {
            atomicOr(&mask[word], bits);
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv2d_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = p.z_base + wid.z;
    let n = z / p.groups;
    let g = z % p.groups;
    let cg = channels_per_group();
    let plane = p.in_h * p.in_w;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    var acc: array<f32, 16>;
    gemm(MODE_BWD_INPUT, z, cg, plane, outputs_per_group() * taps(), row0, col0, lid, &acc);
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let q = col0 + lid.x * 4u + j;
            if m < cg && q < plane {
                out[(n * p.in_channels + g * cg + m) * plane + q] = stored(acc[i * 4u + j]);
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv2d_bwd_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = p.z_base + wid.z;
    let og = outputs_per_group();
    let k_size = channels_per_group() * taps();
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    var acc: array<f32, 16>;
    gemm(MODE_BWD_WEIGHT, g, og, k_size, p.batch * p.out_h * p.out_w, row0, col0, lid, &acc);
    for (var i = 0u; i < 4u; i++) {
        let m = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let k = col0 + lid.x * 4u + j;
            if m < og && k < k_size {
                out[(g * og + m) * k_size + k] = stored(acc[i * 4u + j]);
            }
        }
    }
}

@compute @workgroup_size(256)
fn conv2d_bwd_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) t: u32) {
    let o = wid.y * nwg.x + wid.x;
    let plane = p.out_h * p.out_w;
    var s = 0.0;
    if o < p.out_channels {
        for (var r = t; r < p.batch * plane; r += 256u) {
            s += f32(dy[((r / plane) * p.out_channels + o) * plane + r % plane]);
        }
    }
    partial[t] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if t < stride {
            partial[t] += partial[t + stride];
        }
        workgroupBarrier();
    }
    if t == 0u && o < p.out_channels {
        out[o] = stored(partial[0]);
    }
}
