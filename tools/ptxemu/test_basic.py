import os, sys, math, random, struct
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptxemu import *
K = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'kernels', 'cuda') + os.sep
random.seed(1)
def rnd(n, lo=-1, hi=1): return [rf(random.uniform(lo, hi)) for _ in range(n)]
def grid1(n): return ((n + 255) // 256 or 1, 1, 1)

# relu
mem = Mem(); e = Emulator(open(K + 'relu.ptx').read(), mem)
for n in [1, 33, 300]:
    x = rnd(n); x[0] = 0.0
    if n > 5: x[5] = float('nan')
    xa, ya, ma = mem.put_f32(x), mem.alloc(4 * n), mem.alloc(4 * ((n + 31) // 32))
    e.launch('relu_fwd_f32', grid1(n), 256, [xa, ya, ma, n])
    y = mem.get_f32(ya, n); m = mem.get_u32(ma, (n + 31) // 32)
    for i, v in enumerate(x):
        want = v if (v > 0 or math.isnan(v)) else 0.0
        assert (math.isnan(want) and math.isnan(y[i])) or y[i] == want, (i, v, y[i])
        assert ((m[i // 32] >> (i % 32)) & 1) == (v > 0), ('mask', i)
    dy = rnd(n); da, dxa = mem.put_f32(dy), mem.alloc(4 * n)
    for guided in [0, 1]:
        e.launch('relu_bwd_f32', grid1(n), 256, [da, ma, dxa, n, guided])
        dx = mem.get_f32(dxa, n)
        for i in range(n):
            keep = x[i] > 0 and (not guided or dy[i] > 0)
            assert dx[i] == (dy[i] if keep else 0.0), (i, guided)
    # clamp
    e.launch('clamp_fwd_f32', grid1(n), 256, [xa, ya, ma, n, f2b(-0.25), f2b(0.5)])
    y = mem.get_f32(ya, n); m = mem.get_u32(ma, (n + 31) // 32)
    for i, v in enumerate(x):
        want = -0.25 if v < -0.25 else 0.5 if v > 0.5 else v
        assert (math.isnan(v) and math.isnan(y[i])) or y[i] == want
        assert ((m[i // 32] >> (i % 32)) & 1) == (-0.25 < v < 0.5)
print('relu/clamp ok')

# philox + normal vs python reference of rng.rs
def philox(c, k):
    c = list(c); k = list(k)
    for r in range(10):
        if r > 0: k = [(k[0] + 0x9E3779B9) & M32, (k[1] + 0xBB67AE85) & M32]
        p0 = 0xD2511F53 * c[0]; p1 = 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k[1]) & M32, p0 & M32]
    return c
assert philox([0,0,0,0],[0,0]) == [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
mem = Mem(); e = Emulator(open(K + 'noisy_copies.ptx').read(), mem)
ctrs = [[random.getrandbits(32) for _ in range(4)] for _ in range(40)] + [[0]*4, [M32]*4]
ca, oa = mem.put_u32(sum(ctrs, [])), mem.alloc(16 * len(ctrs))
e.launch('philox4x32_10_u32', grid1(len(ctrs)), 256, [ca, oa, len(ctrs), 0xa4093822, 0x299f31d0])
out = mem.get_u32(oa, 4 * len(ctrs))
for i, c in enumerate(ctrs): assert out[4*i:4*i+4] == philox(c, [0xa4093822, 0x299f31d0]), i
print('philox ok')
def bm_cpu(a, b):
    u1 = rf(((a >> 8) + 1) * 2.0**-24); u2 = rf((b >> 8) * 2.0**-24)
    r = rf(math.sqrt(rf(-2.0 * rf(math.log(u1))))); ang = rf(rf(2*math.pi) * u2)
    return rf(r * rf(math.cos(ang))), rf(r * rf(math.sin(ang)))
n = 37; oa = mem.alloc(4 * n); seed = 0x123456789abc
e.launch('normal_f32', grid1((n + 3)//4), 256, [oa, n, seed & M32, seed >> 32, 5])
got = mem.get_f32(oa, n); worst = 0
for i in range(n):
    r = philox([i // 4, 0, 5, 0], [seed & M32, seed >> 32])
    z = bm_cpu(r[0], r[1]) + bm_cpu(r[2], r[3])
    worst = max(worst, abs(got[i] - z[i % 4]))
print('normal max diff vs libm-ish python', worst); assert worst < 2e-6
# noisy copies
E, count, first, sigma = 7, 3, 2, rf(0.3)
x = rnd(E); xa, outa = mem.put_f32(x), mem.alloc(4 * E * count)
blk = struct.pack('<5If', E, count, first, seed & M32, seed >> 32, sigma)
e.launch('noisy_copies_f32', grid1(count * ((E + 3)//4)), 256, [xa, outa, blk])
got = mem.get_f32(outa, E * count)
for i in range(count):
    for el in range(E):
        r = philox([el // 4, 0, first + i, 0], [seed & M32, seed >> 32])
        z = (bm_cpu(r[0], r[1]) + bm_cpu(r[2], r[3]))[el % 4]
        assert abs(got[i * E + el] - rf(x[el] + rf(sigma * z))) < 1e-6, (i, el)
# given noise replayed: x + sigma * noise, the product then the sum rounded (the CPU's bits)
noise = rnd(E * count); na, outa = mem.put_f32(noise), mem.alloc(4 * E * count)
e.launch('noisy_copies_given_f32', grid1(E * count), 256, [xa, na, outa, blk])
got = mem.get_f32(outa, E * count)
assert got == [rf(x[t % E] + rf(sigma * noise[t])) for t in range(E * count)]
g = rnd(E * count); s0 = rnd(E)
ga, sa, qa = mem.put_f32(g), mem.put_f32(s0), mem.put_f32(s0)
e.launch('noisy_copies_bwd_f32', grid1(E), 256, [ga, sa, qa, count, E])
s, q = mem.get_f32(sa, E), mem.get_f32(qa, E)
for el in range(E):
    ws, wq = s0[el], s0[el]
    for i in range(count):
        v = g[i * E + el]; ws = rf(ws + v); wq = rf(wq + rf(v * v))
    assert s[el] == ws and q[el] == wq
print('noisy copies ok')

# elementwise
mem = Mem(); e = Emulator(open(K + 'elementwise.ptx').read(), mem)
a, b = rnd(50), rnd(50); aa, ba, ya = mem.put_f32(a), mem.put_f32(b), mem.alloc(200)
e.launch('add_fwd_f32', grid1(50), 256, [aa, ba, ya, 50])
assert mem.get_f32(ya, 50) == [rf(u + v) for u, v in zip(a, b)]
e.launch('sum_batch_f32', grid1(10), 256, [aa, ya, 5, 10, 0])
want = [0.0] * 10
for r in range(5):
    want = [rf(w + a[r * 10 + j]) for j, w in enumerate(want)]
assert mem.get_f32(ya, 10) == want
print('elementwise ok')
