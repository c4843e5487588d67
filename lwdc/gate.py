"""The selection gate: a per-layer architecture vector alpha -> an exact one-hot choice with a usable gradient.

LWDC's mask OH(alpha) must be exactly one-hot in the forward pass (so only the chosen branch runs and the
network seen in training is the network that will be derived) yet give alpha a gradient, in the spirit of
Kim et al.'s trainable gate (AAAI 2020): an exact step forward, a continuous surrogate backward.

Forward. ``gumbel`` (default) samples k = argmax(alpha + noise * Gumbel noise), a draw from
Categorical(softmax(alpha / noise)); the noise keeps every branch sampled, and so trained, early on. A noise scale
annealed below 1 (``noise_end`` of the search) concentrates the late draws on the argmax network, the one that
will be derived, so its weights get most of the late training instead of a mixture of paths.
``argmax`` takes k = argmax(alpha).

Backward. The straight-through estimator of a one-hot mask m with the relaxation s = softmax((alpha+noise)/tau)
gives dL/ds_i = <g, o_i>, with g the gradient at the layer's output and o_i branch i's output. The usual
single-path shortcut (GDAS: compute only o_k, scale it by a weight that is 1 forward) is useless in CNNs with
BatchNorm: BN makes the loss invariant to the scale of o_k, so <g, o_k> = 0 and alpha gets no task gradient at
all (measured: ~1e-9, against ~1e-1 with the estimator below; see tests/test_gate.py). We therefore use a
two-sample estimator: besides the chosen branch k, one other branch j, drawn uniformly, runs without autograd,
and s_j receives (N-1) <g, o_j - o_k>: an unbiased estimate (over j) of the full straight-through gradient with
all N branches, up to a constant shift that softmax ignores. It respects BN's invariance (o_j = c * o_k gives 0)
and costs one forward of one branch, with no backward and one saved tensor per layer.

In eval mode the gate always takes argmax(alpha): the supernet then computes exactly what ``derive`` builds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = ["Gate", "GATE_MODES", "anneal_temperature", "choice_probabilities", "join"]

GATE_MODES = ("gumbel", "argmax")


class _GateJoin(torch.autograd.Function):
    """Forward: the chosen branch's output, unchanged. Backward: the output gradient g passes through, and the
    comparison coefficient receives <g, o_j - o_k>. One fused op instead of a subtract-multiply-add chain.

    Only a dot product is ever taken of delta = o_j - o_k, so it is kept in bfloat16: half the memory of float32,
    which is what the search keeps beyond a plain training step, at a relative error of the dot product of
    about 4e-4 (measured on activation-sized tensors). Scaled 8-bit floats would halve it again but cost more
    time and more transient memory than they save (measured with bench/search_cost.py).
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, coef: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(delta.to(torch.bfloat16))
        return out.clone()    # a fresh tensor, so in-place ops downstream (ReLU(inplace=True)) stay legal

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (packed,) = ctx.saved_tensors
        return grad, torch.dot(grad.reshape(-1), packed.reshape(-1).to(grad.dtype)).reshape(()), None


def join(out: torch.Tensor, coef: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``out + coef * delta`` in value (coef is 0) and in gradient, at the cost of one copy and one dot product."""
    return _GateJoin.apply(out, coef, delta.detach())


@dataclass
class Gate:
    """Sampling state shared by all choice layers of one supernet.

    It owns its random generator so that the sequence of choices depends only on ``seed`` (identical on every
    distributed rank, reproducible on resume) and not on whatever else consumes torch's global RNG.
    """

    mode: str = "gumbel"
    tau: float = 1.0
    seed: int = 0
    noise: float = 1.0       # scale of the Gumbel noise: samples follow softmax(alpha / noise)
    generator: torch.Generator = field(default_factory=torch.Generator, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise ValueError(f"unknown gate mode {self.mode!r}; choose one of {', '.join(GATE_MODES)}")
        self.generator.manual_seed(self.seed)

    def sample(self, alpha: torch.Tensor) -> tuple[int, int, torch.Tensor]:
        """Pick the branch to run (k) and the branch to compare with (j != k).

        Returns k, j and a zero-valued scalar whose gradient feeds alpha: the caller returns
        ``join(o_k, coef, o_j - o_k)``, which changes no value and routes (N-1) <g, o_j - o_k> into s_j.
        """
        n = alpha.shape[0]
        logits = alpha
        if self.mode == "gumbel":
            u = torch.rand(alpha.shape, generator=self.generator).clamp_(1e-10, 1.0 - 1e-7)
            logits = alpha - self.noise * torch.log(-torch.log(u)).to(alpha.device, alpha.dtype)
        soft = torch.softmax(logits / self.tau, dim=0)
        k = int(torch.argmax(logits.detach()))
        j = int(torch.randint(n - 1, (1,), generator=self.generator))
        j = j + 1 if j >= k else j
        coef = (n - 1) * (soft[j] - soft[j].detach())
        return k, j, coef

    def state_dict(self) -> dict:
        return {"mode": self.mode, "tau": self.tau, "seed": self.seed, "noise": self.noise,
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.mode, self.tau, self.seed = state["mode"], float(state["tau"]), int(state["seed"])
        self.noise = float(state.get("noise", 1.0))     # checkpoints written before the noise scale existed
        self.generator.set_state(state["rng"])


def anneal_temperature(progress: float, tau_start: float, tau_end: float) -> float:
    """Exponential decay from ``tau_start`` (progress 0) to ``tau_end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return float(math.exp(math.log(tau_start) + progress * (math.log(tau_end) - math.log(tau_start))))


def choice_probabilities(alpha: torch.Tensor) -> torch.Tensor:
    """The gate's distribution over branches: what the cost is averaged over, and what ``gumbel`` samples from at
    noise scale 1 (a smaller scale samples from ``choice_probabilities(alpha / noise)``)."""
    return torch.softmax(alpha, dim=-1)
