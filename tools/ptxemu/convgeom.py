"""Convolution geometry for the interpreter tests: the ConvArgs block and the reference taps."""
import struct

class G:
    def __init__(s, x, w, stride=(1,1), pad=(0,0,0,0), dil=(1,1), groups=1):
        s.N, s.C, s.H, s.W = x; s.O, cg, s.kh, s.kw = w
        s.sh, s.sw = stride; s.ph, s.pw = pad[0], pad[1]; s.dh, s.dw = dil; s.g = groups
        s.cg, s.og = s.C // groups, s.O // groups
        s.OH = (s.H + pad[0] + pad[2] - s.dh * (s.kh - 1) - 1) // s.sh + 1
        s.OW = (s.W + pad[1] + pad[3] - s.dw * (s.kw - 1) - 1) // s.sw + 1
    def args(s, relu=0, splits=1, split_len=0):
        return struct.pack('<21I', s.N, s.C, s.H, s.W, s.O, s.kh, s.kw, s.OH, s.OW, s.sh, s.sw, s.ph, s.pw, s.dh, s.dw, s.g, s.cg, s.og, relu, splits, split_len)
    def taps(s):
        for n in range(s.N):
            for o in range(s.O):
                for oh in range(s.OH):
                    for ow in range(s.OW):
                        for cl in range(s.cg):
                            for i in range(s.kh):
                                for j in range(s.kw):
                                    ih = oh * s.sh - s.ph + i * s.dh; iw = ow * s.sw - s.pw + j * s.dw
                                    if 0 <= ih < s.H and 0 <= iw < s.W:
                                        c = (o // s.og) * s.cg + cl
                                        yield (((n * s.C + c) * s.H + ih) * s.W + iw, ((o * s.cg + cl) * s.kh + i) * s.kw + j, ((n * s.O + o) * s.OH + oh) * s.OW + ow)
