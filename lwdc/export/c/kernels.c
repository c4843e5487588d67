/* lwdc C kernels. The exporter copies the sections a model needs into its .c file ("@kernel NAME" up to
 * "@end"), so the output stays one self-contained C99 file without unused functions. All tensors are one
 * sample in (C, H, W) order; 1-D signals are (C, 1, L). */

/* @kernel range */
/* Output positions o in [*lo, *hi) whose input index o * s - p + off falls inside [0, n). */
static void lw_range(int n, int out, int s, int p, int off, int *lo, int *hi)
{
    int first = p - off, last = n - 1 + p - off;
    *lo = first > 0 ? (first + s - 1) / s : 0;
    *hi = last < 0 ? 0 : last / s + 1;
    if (*hi > out) *hi = out;
    if (*lo > *hi) *lo = *hi;
}
/* @end */

/* @kernel decode_f32 */
/* Weights stored as a codebook (lwdc.methods.codebook.encode_arrays): n weights, O output channels. codes holds `bits`-bit little-endian codes; without a bitmap code 0 is a zero and code c > 0 is
 * codebook[c - 1]; with one, bit i of the bitmap marks a non-zero weight and the codes list only those. A folded
 * BatchNorm's per-channel scale (or 0 for none) multiplies every weight afterwards, in float32, as the exporter
 * computed it, so the result is bit for bit the dense export's weight array. */
static unsigned lw_code(const uint8_t *p, long i, int bits)
{
    unsigned v = 0;
    long pos = i * bits;
    int b;
    for (b = 0; b < bits; ++b, ++pos) v |= (unsigned)((p[pos >> 3] >> (pos & 7)) & 1u) << b;
    return v;
}

static void lw_decode_f32(float *w, long n, int O, const float *codebook, const float *scale,
                          const uint8_t *codes, int bits, const uint8_t *bitmap)
{
    long i, j = 0;
    for (i = 0; i < n; ++i) {
        if (bitmap) {
            w[i] = ((bitmap[i >> 3] >> (i & 7)) & 1u) ? codebook[lw_code(codes, j++, bits)] : 0.0f;
        } else {
            unsigned c = lw_code(codes, i, bits);
            w[i] = c ? codebook[c - 1] : 0.0f;
        }
    }
    if (scale) {
        const long per = n / O;
        for (i = 0; i < n; ++i) w[i] = w[i] * scale[i / per];
    }
}
/* @end */

/* @kernel window */
/* The pooling window of output position o, clipped to the input: [*lo, *hi); returns the divisor that
 * PyTorch's avg_pool uses when padding counts (the window clipped to the padded input). */
static int lw_window(int o, int n, int k, int s, int p, int *lo, int *hi)
{
    int start = o * s - p, end = start + k;
    if (end > n + p) end = n + p;
    int padded = end - start;
    *lo = start < 0 ? 0 : start;
    *hi = end > n ? n : end;
    return padded;
}
/* @end */

/* @kernel act_f32 */
static void lw_act_f32(float *x, int n, int act)
{
    int i;
    switch (act) {
    case 1: for (i = 0; i < n; ++i) x[i] = x[i] > 0.0f ? x[i] : 0.0f; break;
    case 2: for (i = 0; i < n; ++i) x[i] = x[i] < 0.0f ? 0.0f : (x[i] > 6.0f ? 6.0f : x[i]); break;
    case 3: for (i = 0; i < n; ++i) x[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case 4: for (i = 0; i < n; ++i) x[i] = x[i] / (1.0f + expf(-x[i])); break;
    default: break;
    }
}
/* @end */

/* @kernel conv_f32 */
/* Direct convolution, weights (O, C/G, KH, KW), bias always present (BatchNorm folded in). The innermost loop
 * runs along an output row, so for stride 1 it is a contiguous multiply-add the compiler vectorises. */
static void lw_conv_f32(const float *x, int C, int H, int W, float *y, int O, int OH, int OW,
                        const float *w, const float *b, int KH, int KW, int SH, int SW, int PH, int PW,
                        int DH, int DW, int G, int act, float *col)
{
    const int cin = C / G, cout = O / G, ohw = OH * OW, plane = SH == 1 && SW == 1 && OW == W;
    int o, c, kh, kw, oh, ow, i;
    if (col && KH == 1 && KW == 1 && SH == 1 && SW == 1 && PH == 0 && PW == 0 && DH == 1 && DW == 1) {
        /* A pointwise conv is a matrix product over the whole plane, read in place (no patch rows to gather):
         * 4 output channels x 16 pixels accumulate in local arrays the compiler keeps in vector registers, one
         * channel at a time where a group has fewer left, the last pixels (fewer than 16) one at a time. Each
         * output sums bias, then its inputs in order. */
        const int full = ohw & ~15;
        int g, k;
        for (g = 0; g < G; ++g) {
            const float *xg = x + (long)g * cin * ohw;
            for (o = g * cout; o < (g + 1) * cout;) {
                const int n = (g + 1) * cout - o >= 4 ? 4 : 1;
                const float *w0 = w + (long)o * cin, *w1 = w0 + (n > 1 ? cin : 0);
                const float *w2 = w0 + (n > 1 ? 2L * cin : 0), *w3 = w0 + (n > 1 ? 3L * cin : 0);
                float *y0 = y + (long)o * ohw;
                for (i = 0; i < full; i += 16) {
                    float a0[16], a1[16], a2[16], a3[16];
                    int j;
                    for (j = 0; j < 16; ++j) {
                        a0[j] = b[o];
                        a1[j] = b[o + (n > 1)];
                        a2[j] = b[o + 2 * (n > 1)];
                        a3[j] = b[o + 3 * (n > 1)];
                    }
                    for (k = 0; k < cin; ++k) {
                        const float *p = xg + (long)k * ohw + i;
                        const float v0 = w0[k], v1 = w1[k], v2 = w2[k], v3 = w3[k];
                        for (j = 0; j < 16; ++j) {
                            a0[j] += v0 * p[j];
                            a1[j] += v1 * p[j];
                            a2[j] += v2 * p[j];
                            a3[j] += v3 * p[j];
                        }
                    }
                    for (j = 0; j < 16; ++j) y0[i + j] = a0[j];
                    if (n > 1)
                        for (j = 0; j < 16; ++j) {
                            y0[ohw + i + j] = a1[j];
                            y0[2L * ohw + i + j] = a2[j];
                            y0[3L * ohw + i + j] = a3[j];
                        }
                }
                for (c = 0; c < n; ++c)
                    for (i = full; i < ohw; ++i) {
                        float a = b[o + c];
                        for (k = 0; k < cin; ++k) a += w0[(long)c * cin + k] * xg[(long)k * ohw + i];
                        y0[(long)c * ohw + i] = a;
                    }
                o += n;
            }
        }
        for (o = 0; o < O; ++o) lw_act_f32(y + (long)o * ohw, ohw, act);
        return;
    }
    if (col) {
        /* A register-blocked matrix product per group, one output row at a time: col holds that row's input
         * patches (K = C/G*KH*KW rows of OW values, zero where the window leaves the input, each row padded to
         * a multiple of 8); then 4 output channels x 8 output pixels accumulate in local arrays the compiler keeps
         * in vector registers, each patch value loaded once per 4 channels (one channel at a time where a group
         * has fewer left, as in a depthwise conv). Every output sums bias, then k = (c, kh, kw) in order, as the
         * plain loops below do. */
        const int K = cin * KH * KW, OWP = (OW + 7) & ~7;
        int g, k;
        for (g = 0; g < G; ++g) {
            const float *xg = x + (long)g * cin * H * W;
            for (oh = 0; oh < OH; ++oh) {
                for (c = 0, k = 0; c < cin; ++c) {
                    const float *xc = xg + (long)c * H * W;
                    for (kh = 0; kh < KH; ++kh) {
                        const int ih = oh * SH - PH + kh * DH;
                        for (kw = 0; kw < KW; ++kw, ++k) {
                            float *row = col + (long)k * OWP;
                            int w0 = 0, w1 = 0;
                            if (ih >= 0 && ih < H) lw_range(W, OW, SW, PW, kw * DW, &w0, &w1);
                            for (ow = 0; ow < w0; ++ow) row[ow] = 0.0f;
                            if (SW == 1) {
                                const float *src = xc + (long)ih * W - PW + kw * DW;
                                for (ow = w0; ow < w1; ++ow) row[ow] = src[ow];
                            } else {
                                for (ow = w0; ow < w1; ++ow) row[ow] = xc[(long)ih * W + ow * SW - PW + kw * DW];
                            }
                            for (ow = w1 > w0 ? w1 : w0; ow < OWP; ++ow) row[ow] = 0.0f;
                        }
                    }
                }
                for (o = g * cout; o < (g + 1) * cout;) {
                    float *yo = y + (long)o * ohw + (long)oh * OW;
                    const float *w0 = w + (long)o * K;
                    if ((g + 1) * cout - o >= 4) {
                        const float *w1 = w0 + K, *w2 = w0 + 2L * K, *w3 = w0 + 3L * K;
                        for (ow = 0; ow < OW; ow += 8) {
                            float a0[8], a1[8], a2[8], a3[8];
                            const int m = OW - ow < 8 ? OW - ow : 8;
                            for (i = 0; i < 8; ++i) {
                                a0[i] = b[o];
                                a1[i] = b[o + 1];
                                a2[i] = b[o + 2];
                                a3[i] = b[o + 3];
                            }
                            for (k = 0; k < K; ++k) {
                                const float *p = col + (long)k * OWP + ow;
                                const float v0 = w0[k], v1 = w1[k], v2 = w2[k], v3 = w3[k];
                                for (i = 0; i < 8; ++i) {
                                    a0[i] += v0 * p[i];
                                    a1[i] += v1 * p[i];
                                    a2[i] += v2 * p[i];
                                    a3[i] += v3 * p[i];
                                }
                            }
                            for (i = 0; i < m; ++i) {
                                yo[ow + i] = a0[i];
                                yo[ohw + ow + i] = a1[i];
                                yo[2L * ohw + ow + i] = a2[i];
                                yo[3L * ohw + ow + i] = a3[i];
                            }
                        }
                        o += 4;
                        continue;
                    }
                    for (ow = 0; ow < OW; ow += 8) {
                        float a0[8];
                        const int m = OW - ow < 8 ? OW - ow : 8;
                        for (i = 0; i < 8; ++i) a0[i] = b[o];
                        for (k = 0; k < K; ++k) {
                            const float *p = col + (long)k * OWP + ow;
                            const float v0 = w0[k];
                            for (i = 0; i < 8; ++i) a0[i] += v0 * p[i];
                        }
                        for (i = 0; i < m; ++i) yo[ow + i] = a0[i];
                    }
                    ++o;
                }
            }
        }
        for (o = 0; o < O; ++o) lw_act_f32(y + (long)o * ohw, ohw, act);
        return;
    }
    if (cin == 1 && cout == 1 && KH == 1 && KW == 1 && SH == 1 && SW == 1 && PH == 0 && PW == 0) {
        /* A per-channel affine map (a BatchNorm no conv could absorb): elementwise, so y may be x (in place). */
        for (o = 0; o < O; ++o, x += ohw) {
            float *yo = y + (long)o * ohw;
            for (i = 0; i < ohw; ++i) yo[i] = b[o] + w[o] * x[i];
            lw_act_f32(yo, ohw, act);
        }
        return;
    }
    for (o = 0; o < O; ++o) {
        float *yo = y + (long)o * ohw;
        const float *xg = x + (long)(o / cout) * cin * H * W;
        for (i = 0; i < ohw; ++i) yo[i] = b[o];
        for (c = 0; c < cin; ++c) {
            const float *xc = xg + (long)c * H * W;
            for (kh = 0; kh < KH; ++kh) {
                int h0, h1;
                lw_range(H, OH, SH, PH, kh * DH, &h0, &h1);
                for (kw = 0; kw < KW; ++kw) {
                    int w0, w1;
                    const float wv = *w++;
                    lw_range(W, OW, SW, PW, kw * DW, &w0, &w1);
                    if (plane && h0 < h1 && w0 < w1) {
                        /* Stride 1 and OW == W: input index = output index + shift over the whole plane, so
                         * one long vectorised loop covers all rows; the few positions that wrapped into the
                         * next row (outside [w0, w1)) are then taken back out. */
                        const int shift = (kh * DH - PH) * W + kw * DW - PW, p1 = (h1 - 1) * OW + w1;
                        for (i = h0 * OW + w0; i < p1; ++i) yo[i] += wv * xc[i + shift];
                        for (oh = h0; oh < h1; ++oh) {
                            for (ow = 0; oh > h0 && ow < w0; ++ow) yo[oh * OW + ow] -= wv * xc[oh * OW + ow + shift];
                            for (ow = w1; oh + 1 < h1 && ow < OW; ++ow)
                                yo[oh * OW + ow] -= wv * xc[oh * OW + ow + shift];
                        }
                        continue;
                    }
                    for (oh = h0; oh < h1; ++oh) {
                        const int base = (oh * SH - PH + kh * DH) * W - PW + kw * DW;
                        float *out = yo + oh * OW;
                        for (ow = w0; ow < w1; ++ow) out[ow] += wv * xc[base + ow * SW];
                    }
                }
            }
        }
        lw_act_f32(yo, ohw, act);
    }
}
/* @end */

/* @kernel maxpool_f32 */
static void lw_maxpool_f32(const float *x, int C, int H, int W, float *y, int OH, int OW,
                           int KH, int KW, int SH, int SW, int PH, int PW)
{
    int c, oh, ow, h, w, h0, h1, w0, w1;
    for (c = 0; c < C; ++c, x += H * W)
        for (oh = 0; oh < OH; ++oh) {
            lw_window(oh, H, KH, SH, PH, &h0, &h1);
            for (ow = 0; ow < OW; ++ow) {
                float m = -INFINITY;
                lw_window(ow, W, KW, SW, PW, &w0, &w1);
                for (h = h0; h < h1; ++h)
                    for (w = w0; w < w1; ++w) m = x[h * W + w] > m ? x[h * W + w] : m;
                *y++ = m;
            }
        }
}
/* @end */

/* @kernel avgpool_f32 */
static void lw_avgpool_f32(const float *x, int C, int H, int W, float *y, int OH, int OW,
                           int KH, int KW, int SH, int SW, int PH, int PW, int count_pad)
{
    int c, oh, ow, h, w, h0, h1, w0, w1;
    for (c = 0; c < C; ++c, x += H * W)
        for (oh = 0; oh < OH; ++oh) {
            const int dh = lw_window(oh, H, KH, SH, PH, &h0, &h1);
            for (ow = 0; ow < OW; ++ow) {
                const int dw = lw_window(ow, W, KW, SW, PW, &w0, &w1);
                float s = 0.0f;
                for (h = h0; h < h1; ++h)
                    for (w = w0; w < w1; ++w) s += x[h * W + w];
                *y++ = s / (float)(count_pad ? dh * dw : (h1 - h0) * (w1 - w0));
            }
        }
}
/* @end */

/* @kernel gap_f32 */
static void lw_gap_f32(const float *x, int C, int HW, float *y)
{
    int c, i;
    for (c = 0; c < C; ++c, x += HW) {
        float s = 0.0f;
        for (i = 0; i < HW; ++i) s += x[i];
        y[c] = s / (float)HW;
    }
}
/* @end */

/* @kernel add_f32 */
static void lw_add_f32(const float *a, const float *b, float *y, int n, int act)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = a[i] + b[i];
    lw_act_f32(y, n, act);
}
/* @end */

/* @kernel pad_f32 */
static void lw_pad_f32(const float *x, int n, int before, int after, float *y)
{
    int i;
    for (i = 0; i < before; ++i) y[i] = 0.0f;
    memcpy(y + before, x, (size_t)n * sizeof(float));
    for (i = 0; i < after; ++i) y[before + n + i] = 0.0f;
}
/* @end */

/* @kernel fixed */
/* floor((v + 2^(n-1)) / 2^n) without right-shifting a negative number (implementation-defined in C99). */
static int64_t lw_round_shift(int64_t v, int n)
{
    v += (int64_t)1 << (n - 1);
    return v >= 0 ? v >> n : ~(~v >> n);
}

static int8_t lw_sat(int64_t v, int lo, int hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}
/* @end */

/* @kernel round_div */
/* a / b (b > 0) rounded half away from zero, as TensorFlow Lite's int8 averages: C99 division truncates. */
static int64_t lw_round_div(int64_t a, int64_t b)
{
    return a > 0 ? (a + b / 2) / b : (a - b / 2) / b;
}
/* @end */

/* @kernel floor_div */
/* floor(a / b) for b > 0 (C99 division truncates toward zero). */
static int64_t lw_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}
/* @end */

/* @kernel conv_q8 */
/* int8 convolution: acc = bias + sum (x - zx) * w in int32, then y = sat(round_shift(acc * mult, shift) + zy)
 * with a per-channel fixed-point multiplier. lo/hi also apply a fused ReLU or ReLU6. Each output plane is
 * written only after its accumulators are complete, so a depthwise 1x1 conv may run in place (y == x). */
static void lw_conv_q8(const int8_t *x, int C, int H, int W, int8_t *y, int O, int OH, int OW,
                       const int8_t *w, const int32_t *b, const int32_t *mult, const int8_t *shift,
                       int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW, int G,
                       int zx, int zy, int lo, int hi, int32_t *acc, int blocked)
{
    const int cin = C / G, cout = O / G, ohw = OH * OW, plane = SH == 1 && SW == 1 && OW == W;
    int o, c, kh, kw, oh, ow, i;
    if (blocked) {
        /* A register-blocked integer matrix product per group, one output row at a time (as lw_conv_f32's
         * blocked path): acc, viewed as int16, holds the row's input patches centred on the zero point (K =
         * C/G*KH*KW rows of OW values rounded up to even, 0 where the window leaves the input); then 4 output
         * channels x 2 output pixels accumulate in 8 int32 registers. Weights were packed at export: per group,
         * each block of 4 channels as K groups of 4 values (channel fastest), the channels left over as plain
         * rows. Integer sums do not depend on their order, so this equals the loops below bit for bit. */
        int16_t *col = (int16_t *)acc;
        const int K = cin * KH * KW, OWP = (OW + 1) & ~1;
        int g, k;
        for (g = 0; g < G; ++g) {
            const int8_t *xg = x + (long)g * cin * H * W;
            for (oh = 0; oh < OH; ++oh) {
                for (c = 0, k = 0; c < cin; ++c) {
                    const int8_t *xc = xg + (long)c * H * W;
                    for (kh = 0; kh < KH; ++kh) {
                        const int ih = oh * SH - PH + kh * DH;
                        for (kw = 0; kw < KW; ++kw, ++k) {
                            int16_t *row = col + (long)k * OWP;
                            int w0 = 0, w1 = 0;
                            if (ih >= 0 && ih < H) lw_range(W, OW, SW, PW, kw * DW, &w0, &w1);
                            for (ow = 0; ow < w0; ++ow) row[ow] = 0;
                            for (ow = w0; ow < w1; ++ow) row[ow] = (int16_t)(xc[(long)ih * W + ow * SW - PW + kw * DW] - zx);
                            for (ow = w1 > w0 ? w1 : w0; ow < OWP; ++ow) row[ow] = 0;
                        }
                    }
                }
                for (o = g * cout; o < (g + 1) * cout;) {
                    int8_t *yo = y + (long)o * ohw + (long)oh * OW;
                    const int8_t *wo = w + (long)o * K;
                    if ((g + 1) * cout - o >= 4) {
                        for (ow = 0; ow < OW; ow += 2) {
                            int32_t a00 = b[o], a01 = b[o], a10 = b[o + 1], a11 = b[o + 1];
                            int32_t a20 = b[o + 2], a21 = b[o + 2], a30 = b[o + 3], a31 = b[o + 3];
                            const int16_t *p = col + ow;
                            const int8_t *q = wo;
                            for (k = 0; k < K; ++k, p += OWP, q += 4) {
                                const int32_t x0 = p[0], x1 = p[1];
                                int32_t v = q[0];
                                a00 += v * x0; a01 += v * x1;
                                v = q[1]; a10 += v * x0; a11 += v * x1;
                                v = q[2]; a20 += v * x0; a21 += v * x1;
                                v = q[3]; a30 += v * x0; a31 += v * x1;
                            }
                            yo[ow] = lw_sat(lw_round_shift((int64_t)a00 * mult[o], shift[o]) + zy, lo, hi);
                            yo[ohw + ow] = lw_sat(lw_round_shift((int64_t)a10 * mult[o + 1], shift[o + 1]) + zy, lo, hi);
                            yo[2L * ohw + ow] = lw_sat(lw_round_shift((int64_t)a20 * mult[o + 2], shift[o + 2]) + zy, lo, hi);
                            yo[3L * ohw + ow] = lw_sat(lw_round_shift((int64_t)a30 * mult[o + 3], shift[o + 3]) + zy, lo, hi);
                            if (ow + 1 < OW) {
                                yo[ow + 1] = lw_sat(lw_round_shift((int64_t)a01 * mult[o], shift[o]) + zy, lo, hi);
                                yo[ohw + ow + 1] = lw_sat(lw_round_shift((int64_t)a11 * mult[o + 1], shift[o + 1]) + zy, lo, hi);
                                yo[2L * ohw + ow + 1] = lw_sat(lw_round_shift((int64_t)a21 * mult[o + 2], shift[o + 2]) + zy, lo, hi);
                                yo[3L * ohw + ow + 1] = lw_sat(lw_round_shift((int64_t)a31 * mult[o + 3], shift[o + 3]) + zy, lo, hi);
                            }
                        }
                        o += 4;
                        continue;
                    }
                    for (ow = 0; ow < OW; ++ow) {
                        int32_t a = b[o];
                        const int16_t *p = col + ow;
                        for (k = 0; k < K; ++k, p += OWP) a += (int32_t)wo[k] * p[0];
                        yo[ow] = lw_sat(lw_round_shift((int64_t)a * mult[o], shift[o]) + zy, lo, hi);
                    }
                    ++o;
                }
            }
        }
        return;
    }
    for (o = 0; o < O; ++o) {
        const int8_t *xg = x + (long)(o / cout) * cin * H * W;
        for (i = 0; i < ohw; ++i) acc[i] = b[o];
        for (c = 0; c < cin; ++c) {
            const int8_t *xc = xg + (long)c * H * W;
            for (kh = 0; kh < KH; ++kh) {
                int h0, h1;
                lw_range(H, OH, SH, PH, kh * DH, &h0, &h1);
                for (kw = 0; kw < KW; ++kw) {
                    int w0, w1;
                    const int32_t wv = *w++;
                    lw_range(W, OW, SW, PW, kw * DW, &w0, &w1);
                    if (plane && h0 < h1 && w0 < w1) { /* the whole-plane loop of lw_conv_f32, exact here */
                        const int shift = (kh * DH - PH) * W + kw * DW - PW, p1 = (h1 - 1) * OW + w1;
                        for (i = h0 * OW + w0; i < p1; ++i) acc[i] += ((int32_t)xc[i + shift] - zx) * wv;
                        for (oh = h0; oh < h1; ++oh) {
                            for (ow = 0; oh > h0 && ow < w0; ++ow)
                                acc[oh * OW + ow] -= ((int32_t)xc[oh * OW + ow + shift] - zx) * wv;
                            for (ow = w1; oh + 1 < h1 && ow < OW; ++ow)
                                acc[oh * OW + ow] -= ((int32_t)xc[oh * OW + ow + shift] - zx) * wv;
                        }
                        continue;
                    }
                    for (oh = h0; oh < h1; ++oh) {
                        const int base = (oh * SH - PH + kh * DH) * W - PW + kw * DW;
                        int32_t *out = acc + oh * OW;
                        for (ow = w0; ow < w1; ++ow) out[ow] += ((int32_t)xc[base + ow * SW] - zx) * wv;
                    }
                }
            }
        }
        for (i = 0; i < ohw; ++i)
            y[(long)o * ohw + i] = lw_sat(lw_round_shift((int64_t)acc[i] * mult[o], shift[o]) + zy, lo, hi);
    }
}
/* @end */

/* @kernel maxpool_q8 */
static void lw_maxpool_q8(const int8_t *x, int C, int H, int W, int8_t *y, int OH, int OW,
                          int KH, int KW, int SH, int SW, int PH, int PW)
{
    int c, oh, ow, h, w, h0, h1, w0, w1;
    for (c = 0; c < C; ++c, x += H * W)
        for (oh = 0; oh < OH; ++oh) {
            lw_window(oh, H, KH, SH, PH, &h0, &h1);
            for (ow = 0; ow < OW; ++ow) {
                int m = -128;
                lw_window(ow, W, KW, SW, PW, &w0, &w1);
                for (h = h0; h < h1; ++h)
                    for (w = w0; w < w1; ++w) m = x[h * W + w] > m ? x[h * W + w] : m;
                *y++ = (int8_t)m;
            }
        }
}
/* @end */

/* @kernel avgpool_q8 */
/* Average of the stored values (padding counted as z where PyTorch counts it), rounded half away from zero as
 * TensorFlow Lite does; the output keeps the input's scale. */
static void lw_avgpool_q8(const int8_t *x, int C, int H, int W, int8_t *y, int OH, int OW,
                          int KH, int KW, int SH, int SW, int PH, int PW, int count_pad, int z)
{
    int c, oh, ow, h, w, h0, h1, w0, w1;
    for (c = 0; c < C; ++c, x += H * W)
        for (oh = 0; oh < OH; ++oh) {
            const int dh = lw_window(oh, H, KH, SH, PH, &h0, &h1);
            for (ow = 0; ow < OW; ++ow) {
                const int dw = lw_window(ow, W, KW, SW, PW, &w0, &w1);
                const int64_t d = count_pad ? dh * dw : (h1 - h0) * (w1 - w0);
                int64_t s = 0;
                for (h = h0; h < h1; ++h)
                    for (w = w0; w < w1; ++w) s += x[h * W + w] - z;
                *y++ = lw_sat(lw_round_div(s + z * d, d), -128, 127);
            }
        }
}
/* @end */

/* @kernel gap_q8 */
/* Global average with its own output scale: y = sat(round_shift(sum (x - zx) * m, n) + zy), m / 2^n the ratio of
 * the scales over the plane's size (ops/pool.py). */
static void lw_gap_q8(const int8_t *x, int C, int HW, int8_t *y, int zx, int zy, int64_t m, int n)
{
    int c, i;
    for (c = 0; c < C; ++c, x += HW) {
        int64_t s = 0;
        for (i = 0; i < HW; ++i) s += x[i] - zx;
        y[c] = lw_sat(lw_round_shift(s * m, n) + zy, -128, 127);
    }
}
/* @end */

/* @kernel add1_q8 */
/* One int8 sum in TensorFlow Lite's ADD arithmetic (ops/add.py): each centred input times 2^20 is rescaled by its
 * own fixed-point multiplier m / 2^n, the sum is rescaled to the output's scale, then offset and clamped. */
static int8_t lw_add1_q8(int a, int b, int za, int zb, int zy, int32_t ma, int na, int32_t mb, int nb,
                         int32_t my, int ny, int lo, int hi)
{
    const int64_t u = lw_round_shift((int64_t)(a - za) * 1048576 * ma, na);
    const int64_t v = lw_round_shift((int64_t)(b - zb) * 1048576 * mb, nb);
    return lw_sat(lw_round_shift((u + v) * my, ny) + zy, lo, hi);
}
/* @end */

/* @kernel add_q8 */
/* y = a + b on int8 tensors of equal shape (lw_add1_q8 per element). */
static void lw_add_q8(const int8_t *a, const int8_t *b, int8_t *y, int len, int za, int zb, int zy,
                      int32_t ma, int na, int32_t mb, int nb, int32_t my, int ny, int lo, int hi)
{
    int i;
    for (i = 0; i < len; ++i) y[i] = lw_add1_q8(a[i], b[i], za, zb, zy, ma, na, mb, nb, my, ny, lo, hi);
}
/* @end */

/* @kernel rescale_q8 */
/* Copy into another tensor's quantisation (concat inputs): y = sat(round_shift((x - zx) * m, n) + zy). */
static void lw_rescale_q8(const int8_t *x, int8_t *y, int len, int zx, int zy, int64_t m, int n)
{
    int i;
    for (i = 0; i < len; ++i) y[i] = lw_sat(lw_round_shift((x[i] - zx) * m, n) + zy, -128, 127);
}
/* @end */

/* @kernel pad_q8 */
static void lw_pad_q8(const int8_t *x, int n, int before, int after, int8_t *y, int z)
{
    memset(y, z, (size_t)before);
    memcpy(y + before, x, (size_t)n);
    memset(y + before + n, z, (size_t)after);
}
/* @end */

/* @kernel lut_q8 */
static void lw_lut_q8(const int8_t *x, int8_t *y, int n, const int8_t *table)
{
    int i;
    for (i = 0; i < n; ++i) y[i] = table[x[i] + 128];
}
/* @end */
