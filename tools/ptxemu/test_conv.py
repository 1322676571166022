import os, sys, math, random, struct, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptxemu import *
K = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'kernels', 'cuda') + os.sep
random.seed(2)
def rnd(n): return [rf(random.uniform(-1, 1)) for _ in range(n)]
def grid1(n): return ((n + 255) // 256 or 1, 1, 1)

from convgeom import G

def close(got, want, tol, what):
    assert len(got) == len(want)
    worst = 0
    for k, (a, b) in enumerate(zip(got, want)):
        err = abs(a - b) / max(1, abs(b))
        worst = max(worst, err)
        assert err <= tol, f'{what}: element {k}: got {a}, want {b}'
    return worst

cases = [
    (G((1,3,7,5),(4,3,3,3)), 'valid'),
    (G((3,3,7,5),(4,3,3,2),(2,2),(1,1,1,1)), 'stride 2 pad 1'),
    (G((2,2,7,5),(3,2,3,3),(1,2),(1,0,2,1)), 'asym pad'),
    (G((2,2,9,8),(3,2,3,3),(1,1),(2,2,2,2),(2,2)), 'dilation'),
    (G((3,4,7,5),(6,2,3,3),(1,1),(1,1,1,1),(1,1),2), 'groups 2'),
    (G((2,20,5,6),(70,20,3,3),(1,1),(1,1,1,1)), 'multi tile K180 og70'),
    (G((2,3,7,5),(4,3,1,1),(2,2)), '1x1 stride 2'),
    (G((2,3,3,3),(2,3,5,5),(1,1),(2,2,2,2)), 'kernel as large as padded input'),
]
dw_cases = [
    (G((3,3,7,5),(6,1,3,3),(2,2),(1,1,1,1),(1,1),3), 'depthwise x2 stride 2'),
    (G((1,4,8,7),(4,1,3,3),(1,1),(2,2,2,2),(2,2),4), 'depthwise dil 2'),
    (G((3,1,6,5),(4,1,3,3),(1,1),(1,1,1,1)), 'one input channel'),
]
src = open(K + 'conv2d.ptx').read()
for g, name in cases:
    t0 = time.time()
    mem = Mem(); e = Emulator(src, mem)
    x, w, b = rnd(g.N*g.C*g.H*g.W), rnd(g.O*g.cg*g.kh*g.kw), rnd(g.O)
    ylen = g.N*g.O*g.OH*g.OW; dy = rnd(ylen)
    y = [b[(k // (g.OH*g.OW)) % g.O] for k in range(ylen)]
    dx = [0.0]*len(x); dwt = [0.0]*len(w); 
    for xi, wi, yi in g.taps():
        y[yi] += x[xi] * w[wi]; dx[xi] += w[wi] * dy[yi]; dwt[wi] += x[xi] * dy[yi]
    xa, wa, ba, ya, ma, dya = mem.put_f32(x), mem.put_f32(w), mem.put_f32(b), mem.alloc(4*ylen), mem.alloc(4*((ylen+31)//32)), mem.put_f32(dy)
    P = g.N*g.OH*g.OW
    grid = ((P+63)//64, (g.og+63)//64, g.g)
    e.launch('conv2d_fwd_f32', grid, 256, [xa, wa, ba, ya, ma, g.args(relu=1), 0])
    got = mem.get_f32(ya, ylen); m = mem.get_u32(ma, (ylen+31)//32)
    close(got, [max(v, 0.0) for v in y], 1e-5, name + ' fwd relu')
    for k, v in enumerate(y):
        if abs(v) > 1e-5: assert ((m[k//32] >> (k%32)) & 1) == (v > 0), (name, 'mask', k)
    e.launch('conv2d_fwd_f32', grid, 256, [xa, wa, 0, ya, 0, g.args(), 0])
    close(mem.get_f32(ya, ylen), [v - b[(k // (g.OH*g.OW)) % g.O] for k, v in enumerate(y)], 1e-5, name + ' fwd nobias')
    dxa = mem.alloc(4*len(x))
    Q = g.N*g.H*g.W
    e.launch('conv2d_bwd_input_f32', ((Q+63)//64, (g.cg+63)//64, g.g), 256, [dya, wa, dxa, g.args(), 0])
    close(mem.get_f32(dxa, len(x)), dx, 1e-5, name + ' bwd_input')
    Kc = g.cg*g.kh*g.kw
    for splits, split_len in [(1, ((P + 15)//16)*16), (3, ((P + 2)//3 + 15)//16*16)]:
        splits = max(1, (P + split_len - 1)//split_len)
        pa = mem.alloc(4*len(w)*splits)
        e.launch('conv2d_bwd_weight_f32', ((Kc+63)//64, (g.og+63)//64, g.g*splits), 256, [dya, xa, pa, g.args(splits=splits, split_len=split_len)])
        part = mem.get_f32(pa, len(w)*splits)
        tot = [sum(part[s*len(w)+i] for s in range(splits)) for i in range(len(w))]
        close(tot, dwt, 1e-5, f'{name} bwd_weight splits {splits}')
    dba = mem.alloc(4*g.O)
    e.launch('conv2d_bwd_bias_f32', (g.O,1,1), 256, [dya, dba, g.N, g.O, g.OH*g.OW])
    want = [0.0]*g.O
    for k, v in enumerate(dy): want[(k // (g.OH*g.OW)) % g.O] += v
    close(mem.get_f32(dba, g.O), want, 1e-5, name + ' bias')
    print(f'{name}: ok ({time.time()-t0:.1f}s, {e.count} instr)')

src = open(K + 'conv2d_depthwise.ptx').read()
for g, name in dw_cases:
    mem = Mem(); e = Emulator(src, mem)
    x, w, b = rnd(g.N*g.C*g.H*g.W), rnd(g.O*g.cg*g.kh*g.kw), rnd(g.O)
    ylen = g.N*g.O*g.OH*g.OW; dy = rnd(ylen)
    y = [b[(k // (g.OH*g.OW)) % g.O] for k in range(ylen)]
    dx = [0.0]*len(x); dwt = [0.0]*len(w)
    for xi, wi, yi in g.taps():
        y[yi] += x[xi] * w[wi]; dx[xi] += w[wi] * dy[yi]; dwt[wi] += x[xi] * dy[yi]
    xa, wa, ba, ya, ma, dya = mem.put_f32(x), mem.put_f32(w), mem.put_f32(b), mem.alloc(4*ylen), mem.alloc(4*((ylen+31)//32)), mem.put_f32(dy)
    e.launch('conv2d_depthwise_fwd_f32', grid1(ylen), 256, [xa, wa, ba, ya, ma, g.args(relu=1)])
    got = mem.get_f32(ya, ylen); m = mem.get_u32(ma, (ylen+31)//32)
    close(got, [max(v, 0.0) for v in y], 1e-5, name + ' fwd relu')
    for k, v in enumerate(y):
        if abs(v) > 1e-5: assert ((m[k//32] >> (k%32)) & 1) == (v > 0), (name, 'mask', k)
    dxa = mem.alloc(4*len(x))
    e.launch('conv2d_depthwise_bwd_input_f32', grid1(len(x)), 256, [dya, wa, dxa, g.args()])
    close(mem.get_f32(dxa, len(x)), dx, 1e-5, name + ' bwd_input')
    dwa = mem.alloc(4*len(w))
    e.launch('conv2d_depthwise_bwd_weight_f32', (len(w),1,1), 256, [dya, xa, dwa, g.args()])
    close(mem.get_f32(dwa, len(w)), dwt, 1e-5, name + ' bwd_weight')
    print(f'{name}: ok')

# fused reduce over copies
src = open(K + 'conv2d_bwd_input_reduce_copies.ptx').read()
for g, name in [cases[1][0], 'stride2'], [cases[4][0], 'groups'], [cases[3][0], 'dil'], [dw_cases[0][0], 'dw']:
    mem = Mem(); e = Emulator(src, mem)
    w = rnd(g.O*g.cg*g.kh*g.kw); ylen = g.N*g.O*g.OH*g.OW; dy = rnd(ylen)
    E = g.C*g.H*g.W
    dx = [0.0]*(g.N*E)
    for xi, wi, yi in g.taps(): dx[xi] += w[wi]*dy[yi]
    s0 = rnd(E); ws = list(s0); wq = list(s0)
    for n in range(g.N):
        for el in range(E):
            v = dx[n*E+el]; ws[el] += v; wq[el] += v*v
    wa, dya, sa, qa = mem.put_f32(w), mem.put_f32(dy), mem.put_f32(s0), mem.put_f32(s0)
    e.launch('conv2d_bwd_input_reduce_copies_f32', grid1(E), 256, [dya, wa, sa, qa, g.args()])
    close(mem.get_f32(sa, E), ws, 1e-5, name + ' sum'); close(mem.get_f32(qa, E), wq, 1e-5, name + ' sumsq')
    print(f'reduce copies {name}: ok')
