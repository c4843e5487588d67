"""Integer arithmetic shared by the quantiser and every op's int8 reference: per-tensor affine int8 parameters
and the fixed-point rescale the C kernels implement (``m / 2^n`` applied with ``round_shift``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QParams:
    scale: float  # a float32 value
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> "QParams":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = float(np.float32(max(hi - lo, 1e-8) / 255.0))
        zp = int(np.clip(round(-128 - lo / scale), -128, 127))
        return QParams(scale, zp)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """float32 x / scale, rounded half to even, as C's ``lrintf(x / scale)`` does."""
        q = np.rint(np.asarray(x, np.float32) / np.float32(self.scale)).astype(np.int64) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return np.float32(self.scale) * (q.astype(np.int32) - self.zero_point).astype(np.float32)


@dataclass
class QNode:
    """The integer constants of one node (which fields apply is the op's business)."""
    weight: np.ndarray | None = None  # int8 (O, C/g, KH, KW)
    bias: np.ndarray | None = None  # int32 (O,)
    mult: np.ndarray | None = None  # int32 per output channel (conv) or per input (add, concat)
    shift: np.ndarray | None = None
    lut: np.ndarray | None = None  # int8 (256,) for table-driven elementwise ops
    clamp: tuple[int, int] = (-128, 127)


def fixed_point(multiplier: float) -> tuple[int, int]:
    """(m, n) with multiplier ~= m / 2^n, m in [2^30, 2^31) where possible and 1 <= n <= 62."""
    if multiplier <= 0:
        return 0, 1
    mant, exp = math.frexp(multiplier)
    m, n = round(mant * 2 ** 31), 31 - exp
    if m == 2 ** 31:
        m, n = m // 2, n - 1
    if n > 62:
        m, n = round(multiplier * 2 ** 62), 62
    if n < 1:
        raise ValueError(f"rescale factor {multiplier:.3g} is too large for int8 fixed point")
    return int(m), int(n)


def round_shift(v: np.ndarray, n) -> np.ndarray:
    """floor((v + 2^(n-1)) / 2^n) on int64 (numpy's >> on signed integers floors, as the C helper does)."""
    n = np.asarray(n, np.int64)
    return (v + (np.int64(1) << (n - 1))) >> n


def centred(xs: list[np.ndarray], qin: list[QParams]) -> list[np.ndarray]:
    """int8 inputs minus their zero points, as int64."""
    return [x.astype(np.int64) - p.zero_point for x, p in zip(xs, qin)]
