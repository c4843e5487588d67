"""Binary convolution (``lwdc.binary``): sign(x) convolved with sign(W) by XNOR and popcount on 32-bit words,
then one real affine per output channel (XNOR-Net's scale, the bias and a folded BatchNorm).

**Bits.** A bit is 1 for -1 and 0 for +1: an input bit is ``x < t`` with the layer's per-channel threshold t
(sign(x - t), and sign(0) = +1), int8: ``q < ceil(z + t / s)``; a padded position, +1, is a 0 bit.
For values a, b in {+1, -1} with bits p, q: a * b = 1 - 2 (p XOR q), so over n values
``dot = n - 2 popcount(P XOR Q)``. Padding bits above the channel count are 0 in both operands and add nothing.

**Storage.** Weights: per output channel, per kernel position (row-major), the input channels of its group in
``NW = ceil(C_in / groups / 32)`` words, channel ``32 j + b`` in bit ``b`` of word ``j``; as ``int32_t`` in
flash. Per input channel a threshold (float, or int32 in an int8 build). Per output channel, float32 builds
store a float scale ``a`` and bias ``b`` (y = a * dot + b); int8 builds an
int32 bias in units of ``|a|``, a fixed-point multiplier and a shift (``y = round_shift((dot + bias) * m, n)``,
the conv's requantisation), with the weight bits of a channel whose ``a`` is negative flipped. Input: the kernel
packs its input's signs into scratch memory, position-major (``(h * W + w) * G * NW + g * NW + j``), then per output
position gathers the window's ``KH * KW * NW`` words once and runs every output channel of the group over them.

**Packed activations.** A binary layer's output that one other binary layer alone reads is written as that
layer's input bits (its real or int8 output compared with the next layer's thresholds: the same comparison the
next layer would make), the next layer skips packing, and the memory plan gives the buffer its packed size
(``Tensor.packed_bytes``). The Python references keep real values; the bits are the same comparisons.

**Popcount.** Cortex-M4 has no popcount instruction: the kernels use the portable SWAR count (Bit Twiddling
Hacks, "counting bits set, in parallel"), with its last steps shared between words: per word the 2-bit and
4-bit partial counts (XOR, 7 ALU operations: an ARM operand is an immediate or a shifted register, not both);
three words' 4-bit counts are added before they are split into bytes, and up to 30 words' byte counts are
summed before one collection (bytes added pairwise into 16-bit lanes, a multiply by 0x00010001, a shift).
``bench/binary_kernel.py`` measures it against the same count collected per word, the classic per-word SWAR
count with a multiply, an 8-bit table and GCC's ``__builtin_popcount`` (a libgcc call on a Cortex-M4).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ....binary import WORD_BITS, binary_conv, binary_macs, channel_scale, packed_words
from ..fixed import QNode, fixed_point, round_shift
from ..graph import as2d
from ..registry import Op, lowers, register_op
from .activations import act_clamp, act_code, activate

__all__ = ["BinaryConv", "pack_weight_bits", "pack_activation_bits", "popcount", "bit_dot"]

_KERNELS = {
    "binconv": r"""/* Binary convolution (lwdc/export/c/ops/binary.py): bits are 1 for -1, 0 for +1 (and for padding). The
 * scratch words are reached through memcpy, so any scratch buffer (int32 or float) may hold them. */
static uint32_t lw_ldw(const void *p, long i)
{
    uint32_t v;
    memcpy(&v, (const unsigned char *)p + 4 * i, 4);
    return v;
}

static void lw_stw(void *p, long i, uint32_t v)
{
    memcpy((unsigned char *)p + 4 * i, &v, 4);
}

/* n - 2 * popcount(win XOR w) over T words, SWAR (Bit Twiddling Hacks): per word 2-bit then 4-bit counts; three
 * words' 4-bit counts (<= 12) are added before they are split into bytes; byte counts of up to 30 words (<= 240)
 * are summed, then added pairwise into 16-bit lanes and collected by one multiply. */
static int32_t lw_bin_dot(const void *win, const int32_t *w, int T, int32_t n)
{
    uint32_t total = 0;
    int t = 0;
    while (t < T) {
        const int end = T - t > 30 ? t + 30 : T;
        uint32_t bytes = 0;
        for (; t + 3 <= end; t += 3) {
            uint32_t a = lw_ldw(win, t) ^ (uint32_t)w[t];
            uint32_t b = lw_ldw(win, t + 1) ^ (uint32_t)w[t + 1];
            uint32_t c = lw_ldw(win, t + 2) ^ (uint32_t)w[t + 2];
            a -= (a >> 1) & 0x55555555u;
            b -= (b >> 1) & 0x55555555u;
            c -= (c >> 1) & 0x55555555u;
            a = (a & 0x33333333u) + ((a >> 2) & 0x33333333u) + (b & 0x33333333u) + ((b >> 2) & 0x33333333u)
                + (c & 0x33333333u) + ((c >> 2) & 0x33333333u);
            bytes += (a & 0x0F0F0F0Fu) + ((a >> 4) & 0x0F0F0F0Fu);
        }
        for (; t < end; ++t) {
            uint32_t v = lw_ldw(win, t) ^ (uint32_t)w[t];
            v -= (v >> 1) & 0x55555555u;
            v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
            bytes += (v + (v >> 4)) & 0x0F0F0F0Fu;
        }
        bytes = (bytes & 0x00FF00FFu) + ((bytes >> 8) & 0x00FF00FFu);
        total += (bytes * 0x00010001u) >> 16;
    }
    return n - 2 * (int32_t)total;
}

/* Gather the window of output position (oh, ow) of group g: KH * KW * NW words, 0 (= +1) outside the input. */
static void lw_bin_window(const void *bits, int H, int W, int G, int NW, int g, int oh, int ow, int KH, int KW,
                          int SH, int SW, int PH, int PW, int DH, int DW, void *win)
{
    int kh, kw, j;
    long t = 0;
    for (kh = 0; kh < KH; ++kh) {
        const int h = oh * SH - PH + kh * DH;
        for (kw = 0; kw < KW; ++kw) {
            const int x = ow * SW - PW + kw * DW;
            if (h < 0 || h >= H || x < 0 || x >= W) {
                for (j = 0; j < NW; ++j) lw_stw(win, t++, 0u);
            } else {
                const long at = ((long)h * W + x) * G * NW + (long)g * NW;
                for (j = 0; j < NW; ++j) lw_stw(win, t++, lw_ldw(bits, at + j));
            }
        }
    }
}
""",
    "binpack_f32": r"""/* Bit 1 where x < t[c] (sign(x - t) = -1). */
static void lw_binpack_f32(const float *x, const float *t, int C, int HW, int G, void *bits)
{
    const int cin = C / G, NW = (cin + 31) / 32;
    int p, g, j, b;
    for (p = 0; p < HW; ++p)
        for (g = 0; g < G; ++g)
            for (j = 0; j < NW; ++j) {
                uint32_t v = 0;
                const int n = cin - 32 * j < 32 ? cin - 32 * j : 32;
                const int c0 = g * cin + 32 * j;
                const float *xc = x + (long)c0 * HW + p;
                for (b = 0; b < n; ++b) v |= (uint32_t)(xc[(long)b * HW] < t[c0 + b]) << b;
                lw_stw(bits, ((long)p * G + g) * NW + j, v);
            }
}
""",
    "binpack_q8": r"""/* Bit 1 where q < t[c], the channel's threshold in quantised units. */
static void lw_binpack_q8(const int8_t *x, const int32_t *t, int C, int HW, int G, void *bits)
{
    const int cin = C / G, NW = (cin + 31) / 32;
    int p, g, j, b;
    for (p = 0; p < HW; ++p)
        for (g = 0; g < G; ++g)
            for (j = 0; j < NW; ++j) {
                uint32_t v = 0;
                const int n = cin - 32 * j < 32 ? cin - 32 * j : 32;
                const int c0 = g * cin + 32 * j;
                const int8_t *xc = x + (long)c0 * HW + p;
                for (b = 0; b < n; ++b) v |= (uint32_t)((int32_t)xc[(long)b * HW] < t[c0 + b]) << b;
                lw_stw(bits, ((long)p * G + g) * NW + j, v);
            }
}
""",
    "binconv_f32": r"""/* y = act(a[o] * dot + b[o]). x: a float (C, H, W) tensor, or (packed_in) the bits the binary layer before
 * wrote; tn: NULL, or the next binary layer's thresholds (GN groups): y is then written as its input bits.
 * scratch: the packed input (unless packed_in), then KH*KW*NW words of window. */
static void lw_binconv_f32(const void *x, int C, int H, int W, void *y, int O, int OH, int OW,
                           const float *t, const int32_t *w, const float *a, const float *b, int KH, int KW,
                           int SH, int SW, int PH, int PW, int DH, int DW, int G, int act, int packed_in,
                           const float *tn, int GN, void *scratch)
{
    const int cin = C / G, cout = O / G, NW = (cin + 31) / 32, T = KH * KW * NW, ohw = OH * OW;
    const int cn = O / GN, NWN = (cn + 31) / 32;
    const int32_t n = (int32_t)cin * KH * KW;
    const void *bits = packed_in ? x : scratch;
    unsigned char *win = (unsigned char *)scratch + (packed_in ? 0 : 4L * H * W * G * NW);
    int oh, ow, g, o;
    if (!packed_in) lw_binpack_f32((const float *)x, t, C, H * W, G, scratch);
    for (oh = 0; oh < OH; ++oh)
        for (ow = 0; ow < OW; ++ow) {
            const long p = (long)oh * OW + ow;
            if (tn)
                for (o = 0; o < GN * NWN; ++o) lw_stw(y, p * GN * NWN + o, 0u);
            for (g = 0; g < G; ++g) {
                lw_bin_window(bits, H, W, G, NW, g, oh, ow, KH, KW, SH, SW, PH, PW, DH, DW, win);
                for (o = g * cout; o < (g + 1) * cout; ++o) {
                    float v = a[o] * (float)lw_bin_dot(win, w + (long)o * T, T, n) + b[o];
                    if (act == 1 || act == 2) v = v > 0.0f ? v : 0.0f;
                    if (act == 2) v = v < 6.0f ? v : 6.0f;
                    if (tn) {
                        const long at = p * GN * NWN + (long)(o / cn) * NWN + (o % cn) / 32;
                        if (v < tn[o]) lw_stw(y, at, lw_ldw(y, at) | (uint32_t)1 << ((o % cn) % 32));
                    } else {
                        ((float *)y)[(long)o * ohw + p] = v;
                    }
                }
            }
        }
}
""",
    "binconv_q8": r"""/* y = sat(round_shift((dot + b[o]) * m[o], s[o]) + zy), clamped to [lo, hi]; packed_in and tn as in
 * lw_binconv_f32 (tn: the next layer's thresholds in this output's quantised units). */
static void lw_binconv_q8(const void *x, int C, int H, int W, void *y, int O, int OH, int OW,
                          const int32_t *t, const int32_t *w, const int32_t *b, const int32_t *m, const int8_t *s,
                          int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int G, int zy, int lo,
                          int hi, int packed_in, const int32_t *tn, int GN, void *scratch)
{
    const int cin = C / G, cout = O / G, NW = (cin + 31) / 32, T = KH * KW * NW, ohw = OH * OW;
    const int cn = O / GN, NWN = (cn + 31) / 32;
    const int32_t n = (int32_t)cin * KH * KW;
    const void *bits = packed_in ? x : scratch;
    unsigned char *win = (unsigned char *)scratch + (packed_in ? 0 : 4L * H * W * G * NW);
    int oh, ow, g, o;
    if (!packed_in) lw_binpack_q8((const int8_t *)x, t, C, H * W, G, scratch);
    for (oh = 0; oh < OH; ++oh)
        for (ow = 0; ow < OW; ++ow) {
            const long p = (long)oh * OW + ow;
            if (tn)
                for (o = 0; o < GN * NWN; ++o) lw_stw(y, p * GN * NWN + o, 0u);
            for (g = 0; g < G; ++g) {
                lw_bin_window(bits, H, W, G, NW, g, oh, ow, KH, KW, SH, SW, PH, PW, DH, DW, win);
                for (o = g * cout; o < (g + 1) * cout; ++o) {
                    const int32_t acc = lw_bin_dot(win, w + (long)o * T, T, n) + b[o];
                    const int8_t v = lw_sat(lw_round_shift((int64_t)acc * m[o], s[o]) + zy, lo, hi);
                    if (tn) {
                        const long at = p * GN * NWN + (long)(o / cn) * NWN + (o % cn) / 32;
                        if ((int32_t)v < tn[o]) lw_stw(y, at, lw_ldw(y, at) | (uint32_t)1 << ((o % cn) % 32));
                    } else {
                        ((int8_t *)y)[(long)o * ohw + p] = v;
                    }
                }
            }
        }
}
""",
}


# ------------------------------------------------------------------------------------------- bit-level reference
def pack_weight_bits(sign_w: np.ndarray) -> np.ndarray:
    """+-1 weights (O, C/G, KH, KW) -> uint32 words (O, KH, KW, NW): bit b of word j is 1 where channel 32 j + b is
    -1; channels past C/G are 0 bits."""
    o, cin, kh, kw = sign_w.shape
    nw = packed_words(cin)
    neg = np.zeros((o, kh, kw, nw * WORD_BITS), bool)
    neg[..., :cin] = np.transpose(sign_w < 0, (0, 2, 3, 1))
    return _words(neg.reshape(o, kh, kw, nw, WORD_BITS))


def pack_activation_bits(negative: np.ndarray, groups: int) -> np.ndarray:
    """Bits of one sample (C, H, W) (True = -1) -> uint32 words (H, W, G, NW), the order the C kernel packs."""
    c, h, w = negative.shape
    cin = c // groups
    nw = packed_words(cin)
    bits = np.zeros((h, w, groups, nw * WORD_BITS), bool)
    bits[..., :cin] = np.transpose(negative.reshape(groups, cin, h, w), (2, 3, 0, 1))
    return _words(bits.reshape(h, w, groups, nw, WORD_BITS))


def _words(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint64) << np.arange(WORD_BITS, dtype=np.uint64)).sum(axis=-1).astype(np.uint32)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per uint32 word (numpy; the C kernels' SWAR count gives the same numbers)."""
    v = words.astype(np.uint32)
    return np.unpackbits(v.view(np.uint8).reshape(*v.shape, 4), axis=-1).sum(axis=-1).astype(np.int64)


def bit_dot(negative: np.ndarray, wwords: np.ndarray, cin: int, stride, padding, dilation,
            groups: int) -> np.ndarray:
    """The C kernel's integer dot products for one sample, computed as it does: packed words, +1 (0 bits) outside
    the input, ``n - 2 popcount(x XOR w)`` per output channel and position. ``negative`` is (C, H, W) bool."""
    o, kh, kw, nw = wwords.shape
    c, h, w = negative.shape
    xwords = pack_activation_bits(negative, groups)
    ph, pw = padding
    padded = np.zeros((h + 2 * ph, w + 2 * pw, groups, nw), np.uint32)
    padded[ph:ph + h, pw:pw + w] = xwords
    oh = (h + 2 * ph - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pw - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    cout = o // groups
    out = np.zeros((o, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            rows = padded[i * dilation[0]:i * dilation[0] + stride[0] * (oh - 1) + 1:stride[0],
                          j * dilation[1]:j * dilation[1] + stride[1] * (ow - 1) + 1:stride[1]]   # (OH, OW, G, NW)
            for g in range(groups):
                x = rows[:, :, g][None]                                            # (1, OH, OW, NW)
                wg = wwords[g * cout:(g + 1) * cout, i, j][:, None, None]          # (cout, 1, 1, NW)
                out[g * cout:(g + 1) * cout] += popcount(x ^ wg).sum(axis=-1)
    return cin * kh * kw - 2 * out


def _sign_dot(negative: torch.Tensor, sign_w: np.ndarray, attrs: dict) -> torch.Tensor:
    """The same dot products through a float64 convolution of +-1 values (exact): the fast reference."""
    xb = torch.where(negative, -1.0, 1.0).double()
    ph, pw = attrs["padding"]
    xb = F.pad(xb, (pw, pw, ph, ph), value=1.0)
    return F.conv2d(xb, torch.from_numpy(sign_w.astype(np.float64)), None, attrs["stride"], 0, attrs["dilation"],
                    attrs["groups"]).round()


# ------------------------------------------------------------------------------------------------------- op entry
@register_op
class BinaryConv(Op):
    name = "binconv"
    supports = ("BinaryConv1d/BinaryConv2d (lwdc.binary: bit-packed XNOR-popcount)",)
    fuses_act = True
    kernels = _KERNELS

    @lowers(binary_conv)
    def lower_binary(self, lw, node, a):
        weight = lw.const(a["weight"], node)
        dims = weight.ndim - 2
        scale = channel_scale(torch.from_numpy(weight)).numpy().astype(np.float32)    # as the module computes it
        bias, threshold = lw.const(a["bias"], node), lw.const(a["threshold"], node)
        sign = np.where(weight >= 0, 1.0, -1.0).astype(np.float32)
        if dims == 1:
            sign = sign[:, :, None, :]
        src, groups = lw.tensor_of(a["x"], node), int(a["groups"])
        packed = self._packable(lw, node, src)
        lw.emit(node, self.name, [src], weight=sign,
                bias=(bias if bias is not None else np.zeros(len(scale))).astype(np.float32),
                attrs=dict(stride=as2d(a["stride"], dims, 1), padding=as2d(a["padding"], dims, 0),
                           dilation=as2d(a["dilation"], dims, 1), groups=groups, scale=scale,
                           threshold=threshold.astype(np.float32), packed_in=packed))
        if packed:      # the binary layer before writes this layer's input bits, and nothing else reads them
            lw.producer[src].attrs["pack_output"] = True
            c, h, w = lw.graph.tensors[src].shape
            lw.graph.tensors[src].packed_bytes = 4 * h * w * groups * packed_words(c // groups)

    def _packable(self, lw, node, src: str) -> bool:
        """Whether ``src`` comes from another binary layer (as a whole buffer) and this layer alone reads it."""
        producer = lw.producer.get(src)
        if producer is None or producer.op != self.name or producer.output != src \
                or lw.graph.tensors[src].storage != src or src == lw.graph.output:
            return False
        names = lw.names[src]
        return {user for fx in names for user in fx.users if user not in names} == {node}

    @staticmethod
    def fold_affine(node, scale: np.ndarray, shift: np.ndarray) -> None:
        """A BatchNorm (or any per-channel x * scale + shift) after it: y = (a * s) dot + (b * s + t)."""
        node.attrs["scale"] = (node.attrs["scale"].astype(np.float64) * scale).astype(np.float32)
        node.bias = (node.bias.astype(np.float64) * scale + shift).astype(np.float32)

    def run(self, node, xs):
        negative = xs[0] < torch.from_numpy(node.attrs["threshold"]).reshape(1, -1, 1, 1)   # sign(x - t) = -1
        dot = _sign_dot(negative, node.weight, node.attrs).float()        # exact integers
        a, b = torch.from_numpy(node.attrs["scale"]), torch.from_numpy(node.bias)
        return activate(dot * a.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1), node.act)   # float32, as C

    def quantize(self, node, qin, qout):
        a = node.attrs["scale"].astype(np.float64)
        flip = np.where(a < 0, -1.0, 1.0)
        # a channel with a == 0 outputs its bias alone: a tiny step keeps the arithmetic (the dot adds < 1e-3 LSB)
        step = np.where(a != 0, np.abs(a), qout.scale * 2.0 ** -20)
        n = int(np.prod(node.weight.shape[1:]))
        mult, shift = (np.array(v, np.int64) for v in zip(*[fixed_point(s / qout.scale) for s in step]))
        bias = np.clip(np.rint(node.bias.astype(np.float64) / step), -2 ** 31 + n + 1, 2 ** 31 - n - 2)
        # the input threshold in quantised units: s (q - z) >= t  <=>  q >= ceil(z + t / s)
        t = np.ceil(qin[0].zero_point + node.attrs["threshold"].astype(np.float64) / qin[0].scale)
        q = QNode(weight=(node.weight * flip.reshape(-1, 1, 1, 1)).astype(np.int8), bias=bias.astype(np.int32),
                  mult=mult, shift=shift, clamp=act_clamp(node.act, qout))
        q.threshold = np.clip(t, -128, 128).astype(np.int32)        # one more constant of this op's own
        return q

    def run_int8(self, node, q, xs, qin, qout):
        negative = torch.from_numpy(xs[0].astype(np.int64) < q.threshold.reshape(1, -1, 1, 1))   # q < threshold: -1
        acc = _sign_dot(negative, q.weight, node.attrs).to(torch.int64).numpy() + q.bias.reshape(1, -1, 1, 1)
        return round_shift(acc * q.mult.reshape(1, -1, 1, 1), q.shift.reshape(1, -1, 1, 1)) + qout.zero_point

    def macs(self, graph, node):
        """The MAC-equivalent of its binary operations, ceil(BOPs / 64), as ``lwdc.binary`` counts them."""
        return binary_macs(graph.tensors[node.output].size * int(np.prod(node.weight.shape[1:])))

    def params(self, node):
        return node.weight.size + node.bias.size

    def _scratch_words(self, graph, node) -> int:
        """The packed input (unless the layer before wrote it packed) and one window."""
        c, h, w = graph.tensors[node.inputs[0]].shape
        groups = node.attrs["groups"]
        nw = packed_words(c // groups)
        return (0 if node.attrs.get("packed_in") else h * w * groups * nw) + int(np.prod(node.weight.shape[2:])) * nw

    def scratch(self, graph, node):
        return self._scratch_words(graph, node)

    def float_scratch(self, graph, node):
        return self._scratch_words(graph, node)

    def emit(self, e, node):
        a, src, dst = node.attrs, node.inputs[0], node.output
        geometry = [*node.weight.shape[2:], *a["stride"], *a["padding"], *a["dilation"], a["groups"]]
        tensors = [e.at(src), *e.shape(src), e.at(dst), *e.shape(dst)]
        packed_in = int(bool(a.get("packed_in")))
        nxt, nxt_q = None, None          # the binary layer this one writes input bits for
        if a.get("pack_output"):
            (nxt,) = e.g.consumers(dst)
            nxt_q = e.q.nodes[next(i for i, n in enumerate(e.g.nodes) if n is nxt)] if e.int8 else None
        if not e.int8:
            e.use("binconv", "binpack_f32", "binconv_f32")
            words = pack_weight_bits(node.weight).view(np.int32)
            own = "0" if packed_in else e.array("t", "float", a["threshold"])
            out = [e.array("tn", "float", nxt.attrs["threshold"]), nxt.attrs["groups"]] if nxt else ["0", 1]
            e.call("binconv_f32", *tensors, own, e.array("w", "int32_t", words), e.array("a", "float", a["scale"]),
                   e.array("b", "float", node.bias), *geometry, act_code(node.act), packed_in, *out, "lw_col")
            return
        q = e.qnode
        e.use("fixed", "binconv", "binpack_q8", "binconv_q8")
        words = pack_weight_bits(q.weight).view(np.int32)
        own = "0" if packed_in else e.array("t", "int32_t", q.threshold)
        out = [e.array("tn", "int32_t", nxt_q.threshold), nxt.attrs["groups"]] if nxt else ["0", 1]
        e.call("binconv_q8", *tensors, own, e.array("w", "int32_t", words), e.array("b", "int32_t", q.bias),
               e.array("m", "int32_t", q.mult), e.array("s", "int8_t", q.shift), *geometry, e.zp(dst), *q.clamp,
               packed_in, *out, "lw_acc")
