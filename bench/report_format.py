"""How bench.report names and formats one result: its series, its point, its machine, a number or a dash."""
from __future__ import annotations

from .context import cost_label
from .report_latency import cost_of

__all__ = ["noise_label", "series", "same_budget", "point", "machine_label", "fmt"]


def noise_label(r: dict, template: str) -> str:
    """``template`` filled with the run's noise_end where it is not the constant noise of older runs, else ''."""
    return template.format(r["noise_end"]) if r.get("noise_end", 1) != 1 else ""


def series(r: dict) -> str:
    if r["method"] != "lwdc":
        return r["method"]
    return (f"lwdc-{r['ops']}" + noise_label(r, "-noise{:g}") + cost_label(cost_of(r))
            + (f"-ft{r['finetune_override']}" if r.get("finetune_override") else ""))


def same_budget(r: dict) -> bool:
    """False for runs given more training than their schedule (``--finetune-epochs``): outside the comparison."""
    return not r.get("finetune_override")


def point(r: dict) -> str:
    """The LWDC point a run is, or is matched to."""
    cost = f", cost {cost_of(r)}" if cost_of(r) != "macs" else ""
    if r["method"] == "lwdc":
        longer = f", fine-tune {r['finetune_override']}" if r.get("finetune_override") else ""
        return f"{r['ops']} λ={r['lambda']:g}{noise_label(r, ', noise→{:g}')}{cost}{longer}"
    if r.get("matches"):
        name = r["matches"].removesuffix(cost_label(cost_of(r)))
        return "→ " + name.replace("lwdc-", "").replace("-lam", " λ=").replace("-noise", ", noise→") + cost
    return f"→ {r['target']:g} MACs" if r.get("target") is not None else ""


def machine_label(m: dict) -> str:
    """The machine a result was measured on, in words (older results lack the CPU capability)."""
    isa = f", {m['cpu_capability']}" if m.get("cpu_capability") else ""
    return (f"{m['cpu']} ({m['cpu_count']} cores{isa}, shared), torch {m['torch']}, training on "
            f"{m['train_threads']} thread(s)")


def fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)
