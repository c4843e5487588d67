"""The stored form of a layer whose weights share a few values: what the C export writes and what ``lwdc share``
accounts (``layer_bits``). The codebook (float32), one code per weight packed little-endian in as few bits as the
codebook needs, and the zeros either as one more code (dense) or as a bitmap beside codes for the non-zero weights
only (sparse), whichever takes fewer bits. ``decode`` rebuilds the weight bit for bit.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["layer_bits", "encode_arrays", "encode_values", "decode"]


def layer_bits(n: int, nonzero: int, k: int | None) -> dict:
    """Storage of one layer: float32 dense when not shared; else the codebook plus the cheaper of dense codes
    (``ceil(log2(k + 1))`` bits per weight, code 0 = pruned) and a bitmap with ``ceil(log2 k)``-bit indices."""
    if k is None:
        return {"format": "float32", "bits": 32 * n}
    index_bits = max(1, math.ceil(math.log2(k))) if k > 1 else 0
    dense = n * max(1, math.ceil(math.log2(k + 1)))
    sparse = n + nonzero * index_bits
    fmt, bits = ("dense", dense) if dense <= sparse else ("sparse", sparse)
    return {"format": fmt, "bits": bits + 32 * k, "index_bits": index_bits, "codebook": k}


def _pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Little-endian bit packing of small non-negative integers into uint8."""
    if bits == 0 or values.size == 0:
        return np.zeros(0, np.uint8)
    b = ((values[:, None].astype(np.uint64) >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(b.reshape(-1), bitorder="little")


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    if bits == 0 or count == 0:
        return np.zeros(count, np.int64)
    b = np.unpackbits(packed, bitorder="little")[:count * bits].reshape(count, bits).astype(np.int64)
    return (b << np.arange(bits)).sum(1)


def encode_values(weight: np.ndarray, max_values: int = 256) -> dict | None:
    """A plain weight array in stored form, its codebook being its own distinct non-zero values (so ``decode``
    gives it back bit for bit); None when it has more than ``max_values`` of them or storing it coded would not
    take fewer bits than float32 (an ordinary trained layer: nearly every value distinct)."""
    w = np.asarray(weight, np.float32)
    mask = w != 0
    values, index = np.unique(w[mask], return_inverse=True)
    if values.size == 0 or values.size > max_values:
        return None
    if layer_bits(w.size, int(mask.sum()), values.size)["bits"] >= 32 * w.size:
        return None
    full = np.zeros(w.shape, np.int64)
    full[mask] = index.reshape(-1)
    return encode_arrays(values, full, mask)


def encode_arrays(codebook: np.ndarray, index: np.ndarray, mask: np.ndarray) -> dict:
    """``encode`` of plain arrays: ``codebook`` (K,), ``index`` and ``mask`` of the weight's shape."""
    mask, index = np.asarray(mask, bool), np.asarray(index, np.int64)
    k = int(np.asarray(codebook).size)
    plan = layer_bits(mask.size, int(mask.sum()), k)
    flat_mask, flat_index = mask.reshape(-1), index.reshape(-1)
    if plan["format"] == "dense":
        bits = max(1, math.ceil(math.log2(k + 1)))
        payload = {"codes": _pack(np.where(flat_mask, flat_index + 1, 0), bits), "code_bits": bits}
    else:
        payload = {"bitmap": np.packbits(flat_mask.astype(np.uint8), bitorder="little"),
                   "codes": _pack(flat_index[flat_mask], plan["index_bits"]), "code_bits": plan["index_bits"]}
    return {"format": plan["format"], "shape": list(mask.shape), "count": int(mask.size),
            "nonzero": int(mask.sum()), "codebook": np.asarray(codebook, np.float32).copy(), "bits": plan["bits"],
            **payload}


def decode(stored: dict) -> torch.Tensor:
    """The float32 weight ``encode``'s output stands for (exactly the trained layer's weight)."""
    n, codebook = stored["count"], np.asarray(stored["codebook"], np.float32)
    w = np.zeros(n, np.float32)
    if stored["format"] == "dense":
        codes = _unpack(stored["codes"], stored["code_bits"], n)
        w[codes > 0] = codebook[codes[codes > 0] - 1]
    else:
        mask = np.unpackbits(stored["bitmap"], bitorder="little")[:n].astype(bool)
        w[mask] = codebook[_unpack(stored["codes"], stored["code_bits"], int(mask.sum()))]
    return torch.from_numpy(w.reshape(stored["shape"]))
