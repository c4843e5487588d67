"""Where each finished model of a schedule spends its MACs, layer by layer.

    python -m bench.layer_macs [--schedule cpu-converged]

Two compressions at the same total MACs can reach it in different ways: LWDC swaps whole operators (a layer kept,
made 1x1 or grouped, or removed), channel pruning thins layers. This command loads the final model of every
finished run of a schedule (as bench.remeasure does), counts its MACs per layer of the original network with
torch's own ``FlopCounterMode`` (FLOPs / 2; an independent counter, not the operators' closed forms), and writes
``<results>/../layers_<schedule>.json``. bench.report reads that file to put each LWDC point beside the pruning run
matched to it, layer by layer.

A layer of the original network owns every module below its name in the compressed one (the branch LWDC chose for
it keeps the name, ``derive``'s rule; Torch-Pruning keeps names too); a layer with no MACs left was removed (skip)
or pooled.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lwdc.runs import RunError, write_json

from .context import DEFAULT_CACHE, DEFAULT_OUT, result_stem
from .measure import git_info
from .remeasure import INPUT_SHAPE, load_model

__all__ = ["layer_names", "layer_macs", "collect", "layers_path", "main"]


def layers_path(results: Path, schedule: str) -> Path:
    return Path(results).parent / f"layers_{schedule}.json"


def layer_names(original: nn.Module) -> list[str]:
    """The layers that carry MACs in the original network: its convolutions and linear layers, in order."""
    return [n for n, m in original.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def layer_macs(model: nn.Module, layers: list[str], input_shape: tuple[int, ...]) -> dict[str, int]:
    """MACs of one sample through ``model``, per layer of ``layers`` (every module at or below that name)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, *input_shape))
    # keys are "<root class>.<module path>"; "Global" is the whole model
    by_path = {k.split(".", 1)[1]: sum(v.values()) // 2 for k, v in counter.get_flop_counts().items() if "." in k}
    return {name: _owned(by_path, name) for name in layers}


def _owned(by_path: dict[str, int], name: str) -> int:
    """The MACs of ``name`` and everything below it. A module counts its children's MACs when it was called as a
    module; a graph rebuilt by ``lwdc.arch`` may call the children directly, so sum the outermost paths only."""
    below = [p for p in by_path if p == name or p.startswith(name + ".")]
    outer = [p for p in below if not any(q != p and p.startswith(q + ".") for q in below)]
    return int(sum(by_path[p] for p in outer))


def collect(results: Path, cache: Path, schedule: str, log=print) -> dict:
    """Per-layer MACs of every loadable finished run of ``schedule`` in ``results``; writes and returns the file."""
    found = {p.stem: json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))}
    found = {k: r for k, r in found.items() if r.get("schedule") == schedule}
    layers_of: dict[str, list[str]] = {}
    models, skipped = {}, {}
    for stem, r in found.items():
        base = result_stem(r["model"], schedule, "baseline", r.get("baseline_seed", r["seed"]), r.get("width", 1.0),
                           r.get("max_batches"))
        try:
            if base not in layers_of:
                if base not in found:
                    raise RunError(f"its baseline {base} has no result in {results}")
                layers_of[base] = layer_names(load_model(found[base], cache)[0])
            model, _ = load_model(r, cache)
        except RunError as exc:
            skipped[stem] = str(exc)
            log(f"skipped {stem}: {exc}")
            continue
        macs = layer_macs(model, layers_of[base], INPUT_SHAPE)
        models[stem] = {"run": r.get("run", r["method"]), "method": r["method"], "seed": r["seed"], "baseline": base,
                        "layers": macs, "total": sum(macs.values())}
    if not models:
        raise SystemExit(f"no model of schedule {schedule} could be loaded from {cache} ({len(found)} result(s) in "
                         f"{results})")
    out = {"schedule": schedule, "counter": "torch.utils.flop_counter.FlopCounterMode, FLOPs / 2, batch 1",
           "models": models, "skipped": skipped, "git": git_info()}
    path = layers_path(results, schedule)
    write_json(path, out)
    log(f"{len(models)} model(s), {len(skipped)} skipped -> {path}")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.layer_macs", description=__doc__.split("\n\n")[0])
    p.add_argument("--schedule", default="cpu-converged")
    p.add_argument("--results", type=Path, default=DEFAULT_OUT, help="folder of the runs' result files")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="folder of the run folders")
    a = p.parse_args(argv)
    return collect(a.results, a.cache_dir, a.schedule)


if __name__ == "__main__":
    main()
