"""Log-mel front end computed in torch (``torch.stft`` and a hand-built mel filter bank; no torchaudio).

Keyword-spotting networks (DS-CNN and kin) read log-mel spectrograms, not samples. Computing them inside the
model keeps training, evaluation and the report on raw recordings; the C export cannot lower ``torch.stft``, so
it exports the network after the front end and says so (``lwdc.export_c``): the device computes the features.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LogMel", "mel_filter_bank", "hz_to_mel", "mel_to_hz"]


def hz_to_mel(f):
    """HTK's mel scale, 2595 log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filter_bank(n_mels: int, n_fft: int, sample_rate: float, f_min: float = 0.0,
                    f_max: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangles equally spaced on the HTK mel scale, each peaking at 1 at its centre
    (HTK's convention, no area normalisation), on the FFT bin frequencies."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2; got {f_min}, {f_max}, {sample_rate}")
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """(N, 1, L) samples -> (N, 1, n_mels, frames) log(mel power + eps): Hann window, centred frames,
    ``frames = 1 + L // hop``."""

    def __init__(self, sample_rate: int = 8000, n_fft: int = 256, hop: int = 128, n_mels: int = 40,
                 eps: float = 1e-6):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop, self.n_mels, self.eps = sample_rate, n_fft, hop, n_mels, eps
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filter_bank(n_mels, n_fft, sample_rate), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x.reshape(x.shape[0], -1), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                      # (N, bins, frames)
        mel = torch.matmul(self.filters, power)                     # (N, mels, frames)
        return torch.log(mel + self.eps).unsqueeze(1)

    def output_shape(self, length: int) -> tuple[int, int, int]:
        return 1, self.n_mels, 1 + length // self.hop

    def describe(self) -> str:
        return (f"log-mel: |STFT|^2 (Hann {self.n_fft}, hop {self.hop}, centred, {self.sample_rate} Hz) x "
                f"{self.n_mels} HTK mel triangles, log(. + {self.eps:g})")

    def extra_repr(self) -> str:
        return self.describe()


def _check() -> None:   # pragma: no cover - a quick self-check for interactive use
    fb = mel_filter_bank(40, 256, 8000)
    assert math.isclose(float(fb.max()), 1.0, rel_tol=1e-3)
