// Batched matrix multiply through strided views, so that transposes cost nothing:
//   C[z][i, j] = Σ_k A[z][i, k] · B[z][k, j] (+ bias[j]),  C row-major [M, N] per batch z,
//   A[z][i, k] = a[z·a_batch + i·a_row + k·a_col],  B[z][k, j] = b[z·b_batch + k·b_row + j·b_col].
// The host maps linear layers onto it: forward X·Wᵀ + b, dX = dY·W, dW = dYᵀ·X.
//
// Launch: workgroup 16×16 = 256 invocations, dispatch (ceil(N / 64), ceil(M / 64), batches),
// split by the host into dispatches of at most 65535 along z (`z_base` is the first z of a
// dispatch). Each invocation computes a 4×4 block of its workgroup's 64×64 tile of C, looping
// over K in steps of 16 through two workgroup tiles (A 16×64 and B 16×64 floats, 8 KiB in all).
// Storage type of tensors: the host builds an f16 variant of this file by replacing this
// alias (and enabling f16); arithmetic stays f32.
alias stored = f32;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    has_bias: u32,
    a_row: u32,
    a_col: u32,
    a_batch: u32,
    b_row: u32,
    b_col: u32,
    b_batch: u32,
    z_base: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<stored>;
@group(0) @binding(2) var<storage, read> b: array<stored>;
@group(0) @binding(3) var<storage, read> bias: array<stored>;
@group(0) @binding(4) var<storage, read_write> c: array<stored>;

const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [DEPTH][TILE]: tile_a[k·64 + m]
var<workgroup> tile_b: array<f32, 1024>; // [DEPTH][TILE]: tile_b[k·64 + n]

@compute @workgroup_size(16, 16)
fn matmul_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let z = p.z_base + wid.z;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let t = lid.y * 16u + lid.x;
    let a_base = z * p.a_batch;
    let b_base = z * p.b_batch;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += DEPTH) {
        for (var e = 0u; e < 4u; e++) {
            let flat = e * 256u + t;
            let k = k0 + flat / TILE;
            let mn = flat % TILE;
            var av = 0.0;
            if row0 + mn < p.m && k < p.k {
                av = f32(a[a_base + (row0 + mn) * p.a_row + k * p.a_col]);
            }
            tile_a[flat] = av;
            var bv = 0.0;
            if col0 + mn < p.n && k < p.k {
                bv = f32(b[b_base + k * p.b_row + (col0 + mn) * p.b_col]);
            }
            tile_b[flat] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            var ar: array<f32, 4>;
            var br: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                ar[i] = tile_a[kk * TILE + lid.y * 4u + i];
                br[i] = tile_b[kk * TILE + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] += ar[i] * br[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x * 4u + j;
            if row < p.m && col < p.n {
                var v = acc[i * 4u + j];
                if p.has_bias != 0u {
                    v += f32(bias[col]);
                }
                c[(z * p.m + row) * p.n + col] = stored(v);
            }
        }
    }
}
