"""How bench.report names and formats one result: its series, its point, its machine, a number or a dash."""
from __future__ import annotations

from .context import cost_label, distill_label
from .report_latency import cost_of

__all__ = ["noise_label", "distill_of", "series", "same_budget", "point", "machine_label", "fmt"]


def noise_label(r: dict, template: str) -> str:
    """``template`` filled with the run's noise_end where it is not the constant noise of older runs, else ''."""
    return template.format(r["noise_end"]) if r.get("noise_end", 1) != 1 else ""


def distill_of(r: dict) -> float:
    """The distillation weight of a run's fine-tuning (0 for plain runs and results that predate the option)."""
    return r.get("distill") or 0.0


def series(r: dict) -> str:
    if r["method"] != "lwdc":
        return r["method"] + distill_label(distill_of(r))
    return (f"lwdc-{r['ops']}" + noise_label(r, "-noise{:g}") + cost_label(cost_of(r))
            + (f"-ft{r['finetune_override']}" if r.get("finetune_override") else "")
            + distill_label(distill_of(r)))


def same_budget(r: dict) -> bool:
    """False for runs given more training than their schedule (``--finetune-epochs``): outside the comparison."""
    return not r.get("finetune_override")


def point(r: dict) -> str:
    """The LWDC point a run is, or is matched to."""
    cost = f", cost {cost_of(r)}" if cost_of(r) != "macs" else ""
    if r["method"] == "lwdc":
        longer = f", fine-tune {r['finetune_override']}" if r.get("finetune_override") else ""
        return f"{r['ops']} λ={r['lambda']:g}{noise_label(r, ', noise→{:g}')}{cost}{longer}{_how(r)}"
    if r.get("matches"):
        name = r["matches"].removesuffix(distill_label(distill_of(r))).removesuffix(cost_label(cost_of(r)))
        return "→ " + name.replace("lwdc-", "").replace("-lam", " λ=").replace("-noise", ", noise→") + cost + _how(r)
    return f"→ {r['target']:g} MACs" if r.get("target") is not None else ""


def _how(r: dict) -> str:
    """What sets a run apart from the plain point it shares a lambda with: budgets, variants, an ablation, a
    distilled fine-tune, a draw."""
    parts = []
    if r.get("budgets"):
        parts.append("budgets " + " ".join(b.get("budget") or f"{b['cost']}={b['limit']:g}" for b in r["budgets"]))
    if r.get("variants"):
        parts.append("+".join(r["variants"]))
    if r.get("ablations"):
        parts.append("ablated: " + "+".join(r["ablations"]))
    if r.get("distill"):
        parts.append(f"distilled from the baseline (weight {r['distill']:g})")
    if r.get("random_draw"):
        d = r["random_draw"]
        start = "" if d.get("start", "supernet") == "supernet" else f", from the {d['start']} (no search)"
        parts.append(f"random draw {d.get('draw', '?')} matched on {d.get('match', 'macs')}{start}")
    return "".join(f", {p}" for p in parts)


def machine_label(m: dict) -> str:
    """The machine a result was measured on, in words (older results lack the CPU capability)."""
    isa = f", {m['cpu_capability']}" if m.get("cpu_capability") else ""
    return (f"{m['cpu']} ({m['cpu_count']} cores{isa}, shared), torch {m['torch']}, training on "
            f"{m['train_threads']} thread(s)")


def fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)
