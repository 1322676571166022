"""The tensor-core (math = 1) paths of matmul_fwd_f32, conv2d_fwd_f32 and conv2d_bwd_input_f32,
run in the interpreter's mma.sync model against reference loops over TF32-rounded operands.

Each result must equal the exact sum of products of the cvt.rna-rounded operands up to f32
accumulation rounding (|err| <= 2^-20 * sum|a*b|, about 1e-6 relative); it is also checked
against the plain FP32 sums within the TF32 bound stated in docs/cuda.md (2^-10 * sum|a*b|).
A kernel that skipped the rounding (the hardware then truncates) or misplaced a fragment fails
the first check. Shapes: several tiles, ragged edges, transposed views, groups, stride 2."""
import os, sys, math, random, struct, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptxemu import *
from convgeom import G
K = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'kernels', 'cuda') + os.sep
random.seed(3)
def rnd(n): return [rf(random.uniform(-1, 1)) for _ in range(n)]
def t32(v): return b2f(tf32_rna(f2b(v)))

worst = {'exact': 0.0, 'fp32': 0.0}
def check(got, terms, what):
    """terms[i]: (list of (a, b) products, constant) of output i."""
    for i, (pairs, const) in enumerate(terms):
        scale = math.fsum(abs(a * b) for a, b in pairs) + abs(const)
        exact = math.fsum([t32(a) * t32(b) for a, b in pairs] + [const])
        fp32 = math.fsum([a * b for a, b in pairs] + [const])
        e1 = abs(got[i] - exact); e2 = abs(got[i] - fp32)
        assert e1 <= 2.0**-20 * scale + 1e-30, f'{what}: element {i}: got {got[i]}, TF32 sum {exact} (scale {scale})'
        assert e2 <= 2.0**-10 * scale + 1e-30, f'{what}: element {i}: got {got[i]}, FP32 sum {fp32}'
        if scale > 0:
            worst['exact'] = max(worst['exact'], e1 / scale); worst['fp32'] = max(worst['fp32'], e2 / scale)

# matmul: linear forward, its input and weight gradients (transposed views), batched
mem = Mem(); e = Emulator(open(K + 'matmul.ptx').read(), mem)
def mm(m, n, k, a, av, b, bv, bias=None, batches=1):
    ca = mem.alloc(4 * m * n * batches)
    args = struct.pack('<11I', m, n, k, av[0], av[1], bv[0], bv[1], av[2], bv[2], m * n, 0)
    e.launch('matmul_fwd_f32', ((n + 63) // 64, (m + 63) // 64, batches), 256,
             [mem.put_f32(a), mem.put_f32(b), 0 if bias is None else mem.put_f32(bias), ca, args, 1])
    return mem.get_f32(ca, m * n * batches)
t0 = time.time()
for rows, inf, outf in [(3, 37, 10), (70, 20, 66)]:
    x, w, b, g = rnd(rows * inf), rnd(outf * inf), rnd(outf), rnd(rows * outf)
    y = mm(rows, outf, inf, x, (inf, 1, 0), w, (1, inf, 0), b)
    # the bias is added in the epilogue, in FP32, after the tensor-core sum
    check([v - b[i % outf] for i, v in enumerate(y)],
          [([(x[r * inf + i], w[o * inf + i]) for i in range(inf)], 0.0) for r in range(rows) for o in range(outf)],
          f'linear fwd {rows}x{inf}->{outf}')
    dx = mm(rows, inf, outf, g, (outf, 1, 0), w, (inf, 1, 0))
    check(dx, [([(g[r * outf + o], w[o * inf + i]) for o in range(outf)], 0.0) for r in range(rows) for i in range(inf)],
          'linear dX')
    dw = mm(outf, inf, rows, g, (1, outf, 0), x, (inf, 1, 0))
    check(dw, [([(g[r * outf + o], x[r * inf + i]) for r in range(rows)], 0.0) for o in range(outf) for i in range(inf)],
          'linear dW')
B, m, n, k = 2, 5, 9, 19
a, b = rnd(B * m * k), rnd(k * n)
c = mm(m, n, k, a, (k, 1, m * k), b, (n, 1, 0), None, B)
check(c, [([(a[z * m * k + i * k + t], b[t * n + j]) for t in range(k)], 0.0) for z in range(B) for i in range(m) for j in range(n)],
      'batched')
print(f'matmul tf32 ok ({time.time() - t0:.1f}s)')

src = open(K + 'conv2d.ptx').read()
for g, name in [
    (G((2, 3, 7, 5), (4, 3, 3, 2), (2, 2), (1, 1, 1, 1)), 'stride 2 pad 1'),
    (G((3, 4, 7, 5), (6, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2), 'groups 2'),
    (G((1, 20, 4, 5), (70, 20, 3, 3), (1, 1), (1, 1, 1, 1)), "multi tile K180 og70"),
]:
    t0 = time.time()
    mem = Mem(); e = Emulator(src, mem)
    x, w, b = rnd(g.N * g.C * g.H * g.W), rnd(g.O * g.cg * g.kh * g.kw), rnd(g.O)
    ylen = g.N * g.O * g.OH * g.OW; dy = rnd(ylen)
    fwd = [[] for _ in range(ylen)]; bwd = [[] for _ in range(len(x))]
    for xi, wi, yi in g.taps():
        fwd[yi].append((w[wi], x[xi])); bwd[xi].append((w[wi], dy[yi]))
    xa, wa, ba, ya, ma, dya = mem.put_f32(x), mem.put_f32(w), mem.put_f32(b), mem.alloc(4 * ylen), mem.alloc(4 * ((ylen + 31) // 32)), mem.put_f32(dy)
    P = g.N * g.OH * g.OW
    e.launch('conv2d_fwd_f32', ((P + 63) // 64, (g.og + 63) // 64, g.g), 256, [xa, wa, ba, ya, ma, g.args(relu=1), 1])
    got = mem.get_f32(ya, ylen); mask = mem.get_u32(ma, (ylen + 31) // 32)
    pre = [math.fsum([t32(a) * t32(c) for a, c in fwd[k]]) + b[(k // (g.OH * g.OW)) % g.O] for k in range(ylen)]
    for k in range(ylen):
        # ReLU and its mask act on the tensor-core sum plus the bias
        on = (mask[k // 32] >> (k % 32)) & 1
        assert on == (got[k] > 0), (name, 'mask', k)
        if abs(pre[k]) > 1e-4:
            assert on == (pre[k] > 0), (name, 'mask vs reference', k)
    e.launch('conv2d_fwd_f32', ((P + 63) // 64, (g.og + 63) // 64, g.g), 256, [xa, wa, 0, ya, 0, g.args(), 1])
    check(mem.get_f32(ya, ylen), [(fwd[k], 0.0) for k in range(ylen)], name + ' fwd')
    dxa = mem.alloc(4 * len(x)); Q = g.N * g.H * g.W
    e.launch('conv2d_bwd_input_f32', ((Q + 63) // 64, (g.cg + 63) // 64, g.g), 256, [dya, wa, dxa, g.args(), 1])
    check(mem.get_f32(dxa, len(x)), [(bwd[k], 0.0) for k in range(len(x))], name + ' bwd_input')
    print(f'conv2d tf32 {name}: ok ({time.time() - t0:.1f}s)')
print(f"worst |err| / sum|a*b|: {worst['exact']:.2e} vs the TF32 sums, {worst['fp32']:.2e} vs FP32 (bound {2.0**-10:.2e})")
