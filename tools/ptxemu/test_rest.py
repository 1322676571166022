import os, sys, math, random, struct
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptxemu import *
K = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'kernels', 'cuda') + os.sep
random.seed(3)
def rnd(n): return [rf(random.uniform(-1, 1)) for _ in range(n)]
def grid1(n): return ((n + 255) // 256 or 1, 1, 1)

def pool_geom(x, k, s, p, d=(1,1), ceil=False, incl=True):
    N, C, H, W = x
    def cnt(size, k, s, p, d):
        span = d*(k-1)+1; room = size + 2*p - span
        c = (-(-room // s) + 1) if ceil else room // s + 1
        if ceil and (c-1)*s >= size + p: c -= 1
        return c
    OH, OW = cnt(H, k[0], s[0], p[0], d[0]), cnt(W, k[1], s[1], p[1], d[1])
    return dict(N=N, C=C, H=H, W=W, OH=OH, OW=OW, k=k, s=s, p=p, d=d, incl=incl,
                args=struct.pack('<14I', N*C, H, W, OH, OW, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], int(incl)))

def ref_max(g, x):
    out, arg = [], []
    for pl in range(g['N']*g['C']):
        for oh in range(g['OH']):
            for ow in range(g['OW']):
                best, at = None, None
                for i in range(g['k'][0]):
                    for j in range(g['k'][1]):
                        ih = oh*g['s'][0]-g['p'][0]+i*g['d'][0]; iw = ow*g['s'][1]-g['p'][1]+j*g['d'][1]
                        if 0 <= ih < g['H'] and 0 <= iw < g['W']:
                            v = x[pl*g['H']*g['W'] + ih*g['W'] + iw]
                            if best is None or v > best or math.isnan(v): best, at = v, ih*g['W']+iw
                out.append(best if best is not None else float('-inf')); arg.append(at if at is not None else M32)
    return out, arg

mem = Mem(); e = Emulator(open(K + 'maxpool2d.ptx').read(), mem)
for xd, k, s, p, d, ceil in [((1,2,7,5),(2,2),(2,2),(0,0),(1,1),False), ((3,2,7,5),(3,3),(2,2),(1,1),(1,1),False),
        ((2,3,7,5),(2,2),(2,2),(0,0),(1,1),True), ((2,1,5,5),(2,2),(2,2),(1,1),(1,1),True), ((1,2,8,7),(3,3),(1,1),(1,1),(2,2),False),
        ((2,2,9,6),(3,3),(2,2),(1,1),(2,2),True), ((1,3,7,5),(3,2),(2,1),(1,0),(1,1),False), ((1,1,2,2),(2,2),(2,2),(1,1),(3,3),False)]:
    g = pool_geom(xd, k, s, p, d, ceil)
    n = xd[0]*xd[1]*xd[2]*xd[3]; x = [rf(round(v*4)/4) for v in rnd(n)]
    if n > 5: x[5] = float('nan')
    want, warg = ref_max(g, x)
    olen = len(want)
    xa, ya, aa = mem.put_f32(x), mem.alloc(4*olen), mem.alloc(4*olen)
    e.launch('maxpool2d_fwd_f32', grid1(olen), 256, [xa, ya, aa, g['args']])
    got, arg = mem.get_f32(ya, olen), mem.get_u32(aa, olen)
    assert arg == warg, (xd, arg, warg)
    assert all((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want)), (xd, got, want)
    dy = rnd(olen); dya, dxa = mem.put_f32(dy), mem.alloc(4*n)
    e.launch('maxpool2d_bwd_f32', grid1(n), 256, [dya, aa, dxa, g['args']])
    wdx = [0.0]*n; hw = xd[2]*xd[3]; P = g['OH']*g['OW']
    for o, (v, a) in enumerate(zip(dy, warg)):
        if a != M32: wdx[(o//P)*hw + a] = rf(wdx[(o//P)*hw + a] + v)
    assert mem.get_f32(dxa, n) == wdx, xd
print('maxpool ok')

def ref_avg(g, x, dy):
    out = []; dx = [0.0]*len(x)
    def axis(o, a, size):
        start = o*g['s'][a]-g['p'][a]; end = min(start+g['k'][a], size+g['p'][a]); pl = end-start
        st, en = max(start, 0), min(end, size); return st, max(en, st), pl
    o = 0
    for pl in range(g['N']*g['C']):
        for oh in range(g['OH']):
            h0, h1, phh = axis(oh, 0, g['H'])
            for ow in range(g['OW']):
                w0, w1, pww = axis(ow, 1, g['W'])
                if h0 == h1 or w0 == w1: out.append(0.0); o += 1; continue
                div = phh*pww if g['incl'] else (h1-h0)*(w1-w0)
                s = 0.0
                for ih in range(h0, h1):
                    for iw in range(w0, w1): s = rf(s + x[pl*g['H']*g['W']+ih*g['W']+iw])
                out.append(rf(s / div))
                share = rf(dy[o] / div)
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        k = pl*g['H']*g['W']+ih*g['W']+iw; dx[k] = rf(dx[k] + share)
                o += 1
    return out, dx
mem = Mem(); e = Emulator(open(K + 'avgpool2d.ptx').read(), mem)
for incl in [True, False]:
    for xd, k, s, p, ceil in [((1,2,7,5),(2,2),(2,2),(0,0),False), ((3,2,7,5),(3,3),(2,2),(1,1),False), ((2,3,7,5),(2,2),(2,2),(0,0),True),
            ((2,1,5,5),(2,2),(2,2),(1,1),True), ((1,2,6,6),(3,3),(2,2),(1,1),True), ((1,3,7,5),(3,2),(2,1),(1,1),False)]:
        g = pool_geom(xd, k, s, p, (1,1), ceil, incl)
        n = xd[0]*xd[1]*xd[2]*xd[3]; x = rnd(n); olen = xd[0]*xd[1]*g['OH']*g['OW']; dy = rnd(olen)
        want, wdx = ref_avg(g, x, dy)
        xa, ya, dya, dxa = mem.put_f32(x), mem.alloc(4*olen), mem.put_f32(dy), mem.alloc(4*n)
        e.launch('avgpool2d_fwd_f32', grid1(olen), 256, [xa, ya, g['args']])
        assert mem.get_f32(ya, olen) == want, (xd, incl)
        e.launch('avgpool2d_bwd_f32', grid1(n), 256, [dya, dxa, g['args']])
        assert mem.get_f32(dxa, n) == wdx, (xd, incl, 'bwd')
# global avg pool
x = rnd(2*5*33*3); planes, plane = 10, 99; xa, ya = mem.put_f32(x), mem.alloc(40)
inv = rf(1/99)
e.launch('global_avg_pool_fwd_f32', grid1(planes*32), 256, [xa, ya, planes, plane, f2b(inv)])
got = mem.get_f32(ya, planes)
for p_ in range(planes): assert abs(got[p_] - sum(x[p_*plane:(p_+1)*plane])*inv) < 1e-6
dxa = mem.alloc(4*len(x)); e.launch('global_avg_pool_bwd_f32', grid1(len(x)), 256, [ya, dxa, len(x), plane, f2b(inv)])
assert mem.get_f32(dxa, len(x)) == [rf(got[i//plane]*inv) for i in range(len(x))]
print('avgpool ok')

# softmax
mem = Mem(); e = Emulator(open(K + 'softmax.ptx').read(), mem)
for rows, L in [(1, 10), (3, 100), (9, 33), (4, 1)]:
    x = [rf(v*8) for v in rnd(rows*L)]; dy = rnd(rows*L)
    xa, ya, dya, dxa = mem.put_f32(x), mem.alloc(4*rows*L), mem.put_f32(dy), mem.alloc(4*rows*L)
    e.launch('softmax_fwd_f32', grid1(rows*32), 256, [xa, ya, rows, L])
    e.launch('softmax_bwd_f32', grid1(rows*32), 256, [ya, dya, dxa, rows, L])
    y, dx = mem.get_f32(ya, rows*L), mem.get_f32(dxa, rows*L)
    for r in range(rows):
        row = x[r*L:(r+1)*L]; m = max(row); ex = [math.exp(v-m) for v in row]; s = sum(ex)
        wy = [v/s for v in ex]; dot = sum(a*b for a, b in zip(dy[r*L:(r+1)*L], wy))
        for j in range(L):
            assert abs(y[r*L+j]-wy[j]) < 1e-6, (rows, L)
            assert abs(dx[r*L+j] - wy[j]*(dy[r*L+j]-dot)) < 1e-6
print('softmax ok')

# batch norm
mem = Mem(); e = Emulator(open(K + 'batch_norm.ptx').read(), mem)
N, C, I = 2, 3, 5; x = rnd(N*C*I); mean, g_, b_ = rnd(C), rnd(C), rnd(C); var = [rf(abs(v)+0.1) for v in rnd(C)]
inv = [rf(1/rf(math.sqrt(rf(v+rf(1e-5))))) for v in var]
xa, ya = mem.put_f32(x), mem.alloc(4*len(x))
e.launch('batch_norm_fwd_f32', grid1(len(x)), 256, [xa, ya, mem.put_f32(mean), mem.put_f32(inv), mem.put_f32(g_), mem.put_f32(b_), len(x), C, I])
want = [rf(rf(rf(rf(v - mean[(k//I)%C]) * inv[(k//I)%C]) * g_[(k//I)%C]) + b_[(k//I)%C]) for k, v in enumerate(x)]
assert mem.get_f32(ya, len(x)) == want
sc = [rf(a*b) for a, b in zip(inv, g_)]
e.launch('batch_norm_bwd_f32', grid1(len(x)), 256, [xa, mem.put_f32(sc), ya, len(x), C, I])
assert mem.get_f32(ya, len(x)) == [rf(v*sc[(k//I)%C]) for k, v in enumerate(x)]
print('batch norm ok')

# matmul: linear fwd / dX / dW and batched
mem = Mem(); e = Emulator(open(K + 'matmul.ptx').read(), mem)
def mm(m, n, k, a, av, b, bv, bias=None, batches=1, acc=0, c0=None):
    ca = mem.alloc(4*m*n*batches) if c0 is None else mem.put_f32(c0)
    args = struct.pack('<11I', m, n, k, av[0], av[1], bv[0], bv[1], av[2], bv[2], m*n, acc)
    e.launch('matmul_fwd_f32', ((n+63)//64, (m+63)//64, batches), 256, [mem.put_f32(a), mem.put_f32(b), 0 if bias is None else mem.put_f32(bias), ca, args, 0])
    return mem.get_f32(ca, m*n*batches)
for rows, inf, outf in [(3, 70, 10), (65, 20, 66), (1, 3, 2)]:
    x, w, b, g = rnd(rows*inf), rnd(outf*inf), rnd(outf), rnd(rows*outf)
    y = mm(rows, outf, inf, x, (inf, 1, 0), w, (1, inf, 0), b)
    for r in range(rows):
        for o in range(outf):
            assert abs(y[r*outf+o] - (b[o] + sum(x[r*inf+i]*w[o*inf+i] for i in range(inf)))) < 1e-5
    dx = mm(rows, inf, outf, g, (outf, 1, 0), w, (inf, 1, 0))
    for r in range(rows):
        for i in range(inf):
            assert abs(dx[r*inf+i] - sum(g[r*outf+o]*w[o*inf+i] for o in range(outf))) < 1e-5
    dw = mm(outf, inf, rows, g, (1, outf, 0), x, (inf, 1, 0))
    for o in range(outf):
        for i in range(inf):
            assert abs(dw[o*inf+i] - sum(g[r*outf+o]*x[r*inf+i] for r in range(rows))) < 1e-5
# batched with accumulate
B, m, n, k = 3, 5, 7, 20
a, b, c0 = rnd(B*m*k), rnd(k*n), rnd(B*m*n)
c = mm(m, n, k, a, (k, 1, m*k), b, (n, 1, 0), None, B, 1, c0)
for z in range(B):
    for i in range(m):
        for j in range(n):
            assert abs(c[z*m*n+i*n+j] - (c0[z*m*n+i*n+j] + sum(a[z*m*k+i*k+t]*b[t*n+j] for t in range(k)))) < 1e-5
print('matmul ok')
