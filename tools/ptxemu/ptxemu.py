"""A small PTX interpreter for the subset used in kernels/cuda (validation without a GPU)."""
import re, struct, math

def f2b(x):
    try:
        return struct.unpack('<I', struct.pack('<f', x))[0]
    except OverflowError:
        return 0x7f800000 if x > 0 else 0xff800000
def b2f(b): return struct.unpack('<f', struct.pack('<I', b & 0xffffffff))[0]
def rf(x):  # round to f32
    return b2f(f2b(x))
M32, M64 = 0xffffffff, 0xffffffffffffffff
def tf32_rna(bits):
    """cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from zero (the
    magnitude is rounded in sign-magnitude form); NaN stays NaN. Low 13 bits of the result are 0."""
    bits &= M32
    if (bits & 0x7f800000) == 0x7f800000 and bits & 0x7fffff:
        return bits | 0x400000
    return (bits + 0x1000) & 0xffffe000
def tf32_value(bits):
    """The value a tensor core reads from a .tf32 register: the top 19 bits (the rest ignored)."""
    return b2f(bits & 0xffffe000)
def s32(v): v &= M32; return v - (1 << 32) if v & 0x80000000 else v
def s64(v): v &= M64; return v - (1 << 64) if v >> 63 else v

class Mem:
    def __init__(self): self.bufs = {}; self.next = 1
    def alloc(self, nbytes):
        i = self.next; self.next += 1
        self.bufs[i] = bytearray(max(nbytes, 4)); return i << 40
    def loc(self, addr):
        b = self.bufs[addr >> 40]; o = addr & ((1 << 40) - 1)
        if o + 4 > len(b): raise IndexError(f"global access out of bounds: offset {o} of {len(b)}")
        return b, o
    def rd(self, addr): b, o = self.loc(addr); return struct.unpack_from('<I', b, o)[0]
    def wr(self, addr, v): b, o = self.loc(addr); struct.pack_into('<I', b, o, v & M32)
    def put_f32(self, vals): a = self.alloc(4 * len(vals)); [self.wr(a + 4 * i, f2b(v)) for i, v in enumerate(vals)]; return a
    def put_u32(self, vals): a = self.alloc(4 * len(vals)); [self.wr(a + 4 * i, v) for i, v in enumerate(vals)]; return a
    def get_f32(self, a, n): return [b2f(self.rd(a + 4 * i)) for i in range(n)]
    def get_u32(self, a, n): return [self.rd(a + 4 * i) for i in range(n)]

def strip_comments(t): return re.sub(r'//[^\n]*', '', t)

class Function:
    def __init__(self, name, kind, params, rets, body):
        self.name, self.kind, self.params, self.rets = name, kind, params, rets
        self.shared = {}; self.shared_size = 0; self.instrs = []; self.labels = {}
        for stmt in body:
            s = stmt.strip()
            if not s: continue
            m = re.match(r'^(\w+):\s*(.*)$', s, re.S)
            while m:
                self.labels[m.group(1)] = len(self.instrs); s = m.group(2).strip(); m = re.match(r'^(\w+):\s*(.*)$', s, re.S)
            if not s: continue
            if s.startswith('.reg'): continue
            if s.startswith('.shared'):
                m = re.match(r'\.shared\s+\.align\s+(\d+)\s+\.\w+\s+(\w+)\[(\d+)\]', s)
                al, nm, n = int(m.group(1)), m.group(2), int(m.group(3))
                self.shared_size = (self.shared_size + al - 1) // al * al
                self.shared[nm] = self.shared_size; self.shared_size += 4 * n; continue
            self.instrs.append(parse_instr(s))

def split_ops(s):
    out, depth, cur = [], 0, ''
    for ch in s:
        if ch in '{[(': depth += 1
        if ch in '}])': depth -= 1
        if ch == ',' and depth == 0: out.append(cur.strip()); cur = ''
        else: cur += ch
    if cur.strip(): out.append(cur.strip())
    return out

def parse_instr(s):
    pred = None
    m = re.match(r'^@(!?)(%\w+)\s+(.*)$', s, re.S)
    if m: pred = (m.group(1) == '!', m.group(2)); s = m.group(3)
    if s.startswith('call'):
        m = re.match(r'call\s*(\(([^)]*)\))?\s*,?\s*(\w+)\s*,\s*\(([^)]*)\)', s)
        rets = [x.strip() for x in (m.group(2) or '').split(',') if x.strip()]
        args = [x.strip() for x in m.group(4).split(',') if x.strip()]
        return (pred, 'call', [m.group(3)], rets + ['|'] + args)
    parts = s.split(None, 1)
    op = parts[0].split('.')
    ops = split_ops(parts[1]) if len(parts) > 1 else []
    return (pred, op[0], op[1:], ops)

def parse_module(text):
    t = strip_comments(text); funcs = {}
    for m in re.finditer(r'\.(visible\s+\.entry|func)\s*(\(([^)]*)\))?\s*(\w+)\s*\(([^)]*)\)\s*\{', t):
        kind = 'entry' if 'entry' in m.group(1) else 'func'
        name = m.group(4)
        rets = [p.split()[-1] for p in (m.group(3) or '').split(',') if p.strip()]
        params = []
        for p in m.group(5).split(','):
            p = p.strip()
            if not p: continue
            pm = re.match(r'\.(param|reg)\s+(?:\.align\s+\d+\s+)?\.(\w+)\s+(%?\w+)(\[(\d+)\])?', p)
            params.append((pm.group(3), pm.group(2), int(pm.group(5)) if pm.group(5) else None))
        # body: match braces
        i = m.end(); depth = 1; j = i
        while depth:
            if t[j] == '{': depth += 1
            elif t[j] == '}': depth -= 1
            j += 1
        body = t[i:j - 1].split(';')
        funcs[name] = Function(name, kind, params, rets, body)
    return funcs

class Thread:
    __slots__ = ('tid', 'regs', 'stack', 'fn', 'pc', 'done', 'wait', 'params')
def imm(tok):
    if tok.startswith('0f'): return int(tok[2:], 16)
    if tok.startswith('0x') or tok.startswith('-0x'): return int(tok, 16) & M64
    return int(tok) & M64

class Emulator:
    def __init__(self, module_text, mem):
        self.funcs = parse_module(module_text); self.mem = mem; self.count = 0

    def launch(self, entry, grid, block, args):
        fn = self.funcs[entry]
        params = {}
        for (name, ty, size), a in zip(fn.params, args):
            params[name] = a  # int, or bytes for blocks
        assert len(args) == len(fn.params), (entry, len(args), len(fn.params))
        gx, gy, gz = grid
        for bz in range(gz):
            for by in range(gy):
                for bx in range(gx):
                    self.run_block(fn, params, (bx, by, bz), grid, block)

    def run_block(self, fn, params, ctaid, grid, block):
        shared = bytearray(fn.shared_size + 16)
        threads = []
        for t in range(block):
            th = Thread(); th.tid = t; th.regs = {}; th.stack = []; th.fn = fn; th.pc = 0; th.done = False; th.wait = None; th.params = params
            threads.append(th)
        self.ctx = dict(ctaid=ctaid, grid=grid, block=block, shared=shared, shared_vars=fn.shared)
        while True:
            for th in threads:
                if not th.done and th.wait is None:
                    self.run_thread(th)
            live = [th for th in threads if not th.done]
            if not live: return
            # warp collectives
            progressed = False
            for w in range(0, block, 32):
                warp = [th for th in threads[w:w + 32]]
                lw = [th for th in warp if not th.done]
                if lw and all(th.wait is not None and th.wait[0] in ('vote', 'shfl', 'mma') for th in lw):
                    assert all(th.wait[1] == lw[0].wait[1] for th in lw), 'divergent collectives'
                    assert len(lw) == 32, 'collective with exited lanes'
                    self.collective(lw)
                    progressed = True
            if progressed: continue
            if all(th.wait is not None and th.wait[0] == 'bar' for th in live):
                assert len(live) == block, 'barrier with exited threads'
                for th in live: th.wait = None; th.pc += 1
                continue
            raise RuntimeError('deadlock: ' + str(set(str(th.wait) for th in live)))

    def collective(self, lanes):
        kind, pc = lanes[0].wait
        ins = lanes[0].fn.instrs[pc]
        _, op, mods, ops = ins
        if kind == 'mma':
            self.mma(lanes, mods, ops)
        elif kind == 'vote':
            bits = 0
            for i, th in enumerate(lanes):
                if self.val(th, ops[1], 'pred'): bits |= 1 << i
            for th in lanes: self.set(th, ops[0], bits)
        else:
            vals = [self.val(th, ops[1]) for th in lanes]; lm = self.val(lanes[0], ops[2])
            for i, th in enumerate(lanes): self.set(th, ops[0], vals[i ^ lm])
        for th in lanes: th.wait = None; th.pc += 1

    def mma(self, lanes, mods, ops):
        """mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {d0..d3}, {a0..a3}, {b0, b1},
        {c0..c3}: D = A * B + C over the warp, fragments as in the PTX ISA (g = lane / 4,
        t = lane % 4): a0 A[g][t], a1 A[g+8][t], a2 A[g][t+4], a3 A[g+8][t+4]; b0 B[t][g],
        b1 B[t+4][g]; c0, c1 C[g][2t], C[g][2t+1]; c2, c3 the same at row g + 8. Products of
        TF32 values are exact in double; the sum is formed exactly (math.fsum), rounded once to f32."""
        assert mods == ['sync', 'aligned', 'm16n8k8', 'row', 'col', 'f32', 'tf32', 'tf32', 'f32'], mods
        regs = [[x.strip() for x in o.strip('{}').split(',')] for o in ops]
        A = [[0.0] * 8 for _ in range(16)]; B = [[0.0] * 8 for _ in range(8)]; C = [[0.0] * 8 for _ in range(16)]
        for th in lanes:
            l = th.tid & 31; g, t = l >> 2, l & 3
            a = [tf32_value(th.regs[r]) for r in regs[1]]
            b = [tf32_value(th.regs[r]) for r in regs[2]]
            c = [b2f(th.regs[r]) for r in regs[3]]
            A[g][t], A[g + 8][t], A[g][t + 4], A[g + 8][t + 4] = a
            B[t][g], B[t + 4][g] = b
            C[g][2 * t], C[g][2 * t + 1], C[g + 8][2 * t], C[g + 8][2 * t + 1] = c
        for th in lanes:
            l = th.tid & 31; g, t = l >> 2, l & 3
            for i, (row, col) in enumerate([(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)]):
                d = math.fsum([A[row][k] * B[k][col] for k in range(8)] + [C[row][col]])
                self.set(th, regs[0][i], f2b(d))

    def special(self, th, name):
        c = self.ctx
        if name == '%tid.x': return th.tid
        if name == '%ntid.x': return c['block']
        if name.startswith('%ctaid.'): return c['ctaid']['xyz'.index(name[-1])]
        if name == '%laneid': return th.tid & 31
        raise KeyError(name)

    def val(self, th, tok, ty=None):
        if tok.startswith('%'):
            if '.' in tok: return self.special(th, tok)
            return th.regs[tok]
        if tok in self.ctx['shared_vars']: return self.ctx['shared_vars'][tok]
        return imm(tok)
    def set(self, th, reg, v): th.regs[reg] = v

    def addr(self, th, tok):
        inner = tok.strip()[1:-1]
        m = re.match(r'^(%?\w+)\s*(\+\s*(-?\d+))?$', inner)
        base, off = m.group(1), int(m.group(3) or 0)
        return base, off

    def run_thread(self, th):
        mem = self.mem
        while True:
            fn = th.fn
            if th.pc >= len(fn.instrs): raise RuntimeError('fell off ' + fn.name)
            pred, op, mods, ops = fn.instrs[th.pc]
            self.count += 1
            if pred is not None:
                pv = th.regs[pred[1]]
                if pred[0]: pv = not pv
                if not pv: th.pc += 1; continue
            ty = mods[-1] if mods else None
            R = th.regs
            def g(k, t=ty): return self.val(th, ops[k], t)
            def gf(k):
                tok = ops[k]
                return b2f(self.val(th, tok))
            d = ops[0] if ops else None
            if op == 'ld' and mods[0] == 'param':
                base, off = self.addr(th, ops[1]); p = th.params[base]
                if isinstance(p, (bytes, bytearray)):
                    R[d] = struct.unpack_from('<I', p, off)[0]
                else:
                    R[d] = p
            elif op == 'cvta': R[d] = g(1)
            elif op == 'mov': R[d] = g(1)
            elif op in ('add', 'sub', 'mul', 'mad', 'div', 'rem', 'min', 'max') and ty in ('u32', 's32', 'u64', 's64', 'b32'):
                a = g(1); b = g(2)
                if op == 'mul' and mods[0] == 'wide':
                    if ty == 's32': R[d] = (s32(a) * s32(b)) & M64
                    else: R[d] = ((a & M32) * (b & M32)) & M64
                elif op == 'mul' and mods[0] == 'hi':
                    R[d] = (((a & M32) * (b & M32)) >> 32) & M32
                else:
                    bits = 64 if ty in ('u64', 's64') else 32
                    mask = M64 if bits == 64 else M32
                    sg = (lambda v: s64(v)) if ty == 's64' else (lambda v: s32(v))
                    if op == 'add': r = a + b
                    elif op == 'sub': r = a - b
                    elif op == 'mul': r = (sg(a) * sg(b)) if ty.startswith('s') else (a & mask) * (b & mask)
                    elif op == 'mad':
                        c = g(3); r = ((sg(a) * sg(b)) if ty.startswith('s') else (a & mask) * (b & mask)) + c
                    elif op == 'div':
                        if ty.startswith('s'): r = int(sg(a) / sg(b))
                        else: r = (a & mask) // (b & mask)
                    elif op == 'rem':
                        if ty.startswith('s'): r = int(math.fmod(sg(a), sg(b)))
                        else: r = (a & mask) % (b & mask)
                    elif op == 'min': r = min(sg(a), sg(b)) if ty.startswith('s') else min(a & mask, b & mask)
                    elif op == 'max': r = max(sg(a), sg(b)) if ty.startswith('s') else max(a & mask, b & mask)
                    R[d] = r & mask
            elif op in ('shl', 'shr'):
                a = g(1); b = g(2); bits = 64 if ty == 'b64' else 32; mask = M64 if bits == 64 else M32
                if op == 'shl': R[d] = (a << b) & mask if b < bits else 0
                else: R[d] = ((a & mask) >> b) if b < bits else 0
            elif op in ('and', 'or', 'xor') and ty != 'pred':
                a = g(1); b = g(2)
                R[d] = (a & b) if op == 'and' else (a | b) if op == 'or' else (a ^ b)
            elif op == 'and' and ty == 'pred': R[d] = bool(R[ops[1]]) and bool(R[ops[2]])
            elif op == 'or' and ty == 'pred': R[d] = bool(R[ops[1]]) or bool(R[ops[2]])
            elif op == 'not' and ty == 'pred': R[d] = not R[ops[1]]
            elif op == 'setp':
                cmp = mods[0]; t = mods[-1]; comb = mods[1] if len(mods) == 3 else None
                if t == 'f32':
                    a = gf(1); b = gf(2)
                    if cmp == 'nan': r = math.isnan(a) or math.isnan(b)
                    elif math.isnan(a) or math.isnan(b): r = cmp == 'ne' and False
                    else: r = {'lt': a < b, 'gt': a > b, 'ge': a >= b, 'le': a <= b, 'eq': a == b, 'ne': a != b}[cmp]
                else:
                    a = g(1); b = g(2)
                    if t.startswith('s'): a, b = (s64(a), s64(b)) if t == 's64' else (s32(a), s32(b))
                    else:
                        mask = M64 if t == 'u64' else M32; a &= mask; b &= mask
                    r = {'lt': a < b, 'gt': a > b, 'ge': a >= b, 'le': a <= b, 'eq': a == b, 'ne': a != b}[cmp]
                if comb:
                    c = R[ops[3]]; r = (r and c) if comb == 'and' else (r or c)
                R[d] = r
            elif op == 'selp': R[d] = g(1) if R[ops[3]] else g(2)
            elif op in ('ld', 'st', 'red'):
                space = mods[0]
                width = 4 if 'v4' in mods else 2 if 'v2' in mods else 1
                vec = width > 1
                if op == 'st' or op == 'red': atok, vtok = ops[0], ops[1]
                else: atok, vtok = ops[1], ops[0]
                base, off = self.addr(th, atok)
                a = (self.val(th, base) + off)
                if space == 'shared':
                    sh = self.ctx['shared']
                    if a + 4 * width > len(sh) or a % (4 * width): raise IndexError(f'shared access {a} in {fn.name}')
                    rd = lambda x: struct.unpack_from('<I', sh, x)[0]
                    def wr(x, v): struct.pack_into('<I', sh, x, v & M32)
                else:
                    a &= M64
                    if a % (4 * width): raise IndexError('misaligned global')
                    rd = mem.rd; wr = mem.wr
                if op == 'red':
                    assert mods[1] == 'or'
                    wr(a, rd(a) | self.val(th, vtok))
                elif vec:
                    regs = [x.strip() for x in vtok.strip('{}').split(',')]
                    if op == 'ld':
                        for i, r in enumerate(regs): R[r] = rd(a + 4 * i)
                    else:
                        for i, r in enumerate(regs): wr(a + 4 * i, self.val(th, r))
                else:
                    if op == 'ld': R[vtok] = rd(a)
                    else: wr(a, self.val(th, vtok))
            elif op in ('add', 'sub', 'mul', 'div', 'fma', 'min', 'max', 'sqrt', 'neg', 'ex2') and ty == 'f32':
                if op == 'neg': R[d] = g(1) ^ 0x80000000
                elif op == 'sqrt': R[d] = f2b(math.sqrt(gf(1))) if gf(1) >= 0 else 0x7fc00000
                elif op == 'ex2': R[d] = f2b(2.0 ** gf(1))
                elif op == 'fma':
                    a, b, c = gf(1), gf(2), gf(3)
                    R[d] = f2b(a * b + c)
                elif op in ('min', 'max'):
                    a, b = gf(1), gf(2)
                    if math.isnan(a): R[d] = g(2)
                    elif math.isnan(b): R[d] = g(1)
                    else: R[d] = f2b(min(a, b) if op == 'min' else max(a, b))
                else:
                    a, b = gf(1), gf(2)
                    try:
                        r = {'add': lambda: a + b, 'sub': lambda: a - b, 'mul': lambda: a * b, 'div': lambda: a / b}[op]()
                    except ZeroDivisionError:
                        r = float('nan') if a == 0 or math.isnan(a) else math.copysign(float('inf'), a) * math.copysign(1, b)
                    R[d] = f2b(r)
            elif op == 'cvt':
                dt, st = mods[-2], mods[-1]
                v = g(1)
                if dt == 'f32' and st == 'u32': R[d] = f2b(float(v & M32))
                elif dt == 'f32' and st == 's32': R[d] = f2b(float(s32(v)))
                elif dt == 'tf32' and st == 'f32':
                    assert mods[0] == 'rna', mods
                    R[d] = tf32_rna(v)
                elif dt == 'u32' and st == 'f32':
                    f = b2f(v); R[d] = 0 if math.isnan(f) or f < 0 else min(int(f), M32)
                else: raise NotImplementedError('cvt ' + '.'.join(mods))
            elif op == 'vote': th.wait = ('vote', th.pc); return
            elif op == 'mma': th.wait = ('mma', th.pc); return
            elif op == 'shfl': th.wait = ('shfl', th.pc); return
            elif op == 'bar': th.wait = ('bar', th.pc); return
            elif op == 'bra':
                th.pc = fn.labels[ops[0]]; continue
            elif op == 'call':
                name = mods[0]; i = ops.index('|'); rets, args = ops[:i], ops[i + 1:]
                callee = self.funcs[name]
                vals = [self.val(th, a) for a in args]
                th.stack.append((fn, th.pc, th.regs, rets))
                th.fn = callee; th.pc = 0; th.regs = {}
                for (pname, _, _), v in zip(callee.params, vals): th.regs[pname] = v
                continue
            elif op == 'ret':
                if th.stack:
                    callee = fn; outs = [th.regs[r] for r in callee.rets]
                    th.fn, pc, regs, rets = th.stack.pop(); th.regs = regs
                    for r, v in zip(rets, outs): regs[r] = v
                    th.pc = pc + 1; continue
                th.done = True; return
            else:
                raise NotImplementedError(f'{op}.{".".join(mods)} in {fn.name}')
            th.pc += 1
