"""Random architectures at an LWDC point's cost (issue 26): is the search better than chance?

A draw picks an operator per layer uniformly at random and is kept only when its cost (MACs, or another lwdc
cost such as ``latency:onnxruntime``) is within 3% of the LWDC point's derived network. It starts from the same
trained supernet as the point: the point's finished search checkpoint is copied into the draw's run folder with
every gate set one-hot on the drawn operator, so ``lwdc.compress`` resumes after the search, derives the draw and
fine-tunes it with exactly the point's settings and epochs (not the point's cost budgets, which would move the draw:
``draw_config``). Draw ``k`` of a point is reproducible (its own seed).

A second start (``--start warmup``) gives the same draw the weights of the uncompressed model after the point's
branch warm-up and no search: it asks whether the supernet's search-phase training, not only the choice, is what a
random architecture lacks. Draw ``k`` picks the same operators from either start, so the two compare pairwise.
"""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from lwdc import CompressConfig, compress
from lwdc.api import compress_fingerprint
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.methods.lwdc import LWDC
from lwdc.runs import Run, atomic_save, load_checkpoint
from lwdc.space import expand
from lwdc.stages import check_checkpoint

from .context import Context, run_name
from .runners import lwdc_config, lwdc_extra

__all__ = ["draw_config", "draw_matched", "draw_seed", "seed_draw", "run_random", "warmed_weights", "TOLERANCE"]

TOLERANCE = 0.03            # a draw's cost within 3% of the point's
MAX_TRIES = 200_000       # rejection sampling over table sums: well under a second


def draw_config(point: CompressConfig) -> CompressConfig:
    """The config a draw of ``point`` is derived and fine-tuned with: the point's, without its budgets. A draw's
    choices are final; the point's budgets would repair and fill them back toward the point's own cost (a draw
    matched on latency was moved to the point's MACs target, and the run stopped on "not the draw")."""
    return replace(point, budgets=None, lam=point.effective_lam)


def draw_seed(seed: int, draw: int) -> int:
    """The random seed of draw ``draw`` of a point trained with ``seed`` (a CIFAR seed or a 1-D task's split), the
    same for every matched cost: the matched cost's own table and target already make its draws its own."""
    return 1000 * seed + draw


def draw_matched(table, layers: dict[str, list[str]], target: float, seed: int,
                 tolerance: float = TOLERANCE) -> tuple[dict[str, str], float, int]:
    """Uniform operator per layer, rejected until the cost ratio is within ``tolerance`` of ``target``; returns
    (choices, ratio, tries). Costs are summed from the table (no network is built per try)."""
    rng = random.Random(seed)
    names = list(layers)
    for tries in range(1, MAX_TRIES + 1):
        picks = {n: rng.randrange(len(layers[n])) for n in names}
        ratio = table.ratio_of(picks)
        if abs(ratio / target - 1) <= tolerance:
            return {n: layers[n][i] for n, i in picks.items()}, ratio, tries
    raise SystemExit(f"no uniform draw within {tolerance:.0%} of {target:.3f}x in {MAX_TRIES:,} tries: the point "
                     "is too far from what random choices reach; match another point")


def _point_dir(ctx: Context) -> Path:
    a = ctx.args
    return ctx.folder / run_name("lwdc", a.lam, a.ops, None, noise_end=a.noise_end, cost=a.cost)


def _point_ratio(point: Path, table, supernet) -> float:
    """The LWDC point's cost ratio under ``table``: its derived choices priced like the draws."""
    result = Run(point).read_file("result.json")
    if result is not None:
        choices = result["choices"]
    else:
        state = check_checkpoint(point / "checkpoints" / "search.pt", "search", None)
        choices = {n: layer.op_names[int(torch.argmax(state["model"][f"net.{n}.alpha"]))]
                   for n, layer in supernet.choice_layers().items()}
    layers = supernet.choice_layers()
    return table.ratio_of({n: layers[n].op_names.index(op) for n, op in choices.items()})


def warmed_weights(ctx: Context, base: nn.Module, config: CompressConfig, point: Path) -> dict:
    """The supernet of ``config`` over the uncompressed ``base`` after the branch warm-up of the search and nothing
    else (lwdc's own warm-up, LWDC.warm_up): where a ``--start warmup`` draw starts. Kept in the point's run folder
    (checkpoint ``warmed_supernet``, tied to its settings), so a point's draws share one warm-up."""
    run, stage = Run(point), "warmed_supernet"
    fingerprint = compress_fingerprint(config, "search")
    if run.has_checkpoint(stage):
        state = load_checkpoint(run.checkpoint_path(stage), stage, required=("fingerprint", "model"))
        if state["fingerprint"] == fingerprint:
            ctx.log(f"warm-up: finished earlier, loaded from {run.checkpoint_path(stage)}")
            return state["model"]
    settings = SimpleNamespace(config=config, example=ctx.example, log=ctx.log, train_data=ctx.train)
    method = LWDC()
    supernet = method.expand(base, settings)
    errors = method.warm_up(supernet, settings)
    run.save_stage(stage, {"fingerprint": fingerprint, "model": supernet.state_dict(), "errors": errors})
    return supernet.state_dict()


def seed_draw(search: Path, config: CompressConfig, supernet, table, target: float, seed: int, run_dir: Path,
              weights: dict | None = None, **record_extra) -> dict:
    """Draw operators matched on ``table``'s cost to ``target`` and write ``search`` (a finished search
    checkpoint of ``supernet``'s point, searched with ``config``) into ``run_dir`` with every gate one-hot on the
    draw, so ``lwdc.compress`` with ``draw_config(config)`` resumes there, derives the draw and fine-tunes it.
    ``weights``: the supernet weights to start from instead of the search's (``warmed_weights``).
    Returns the draw's record (also written as ``random_draw.json``, with ``record_extra`` in it)."""
    state = check_checkpoint(search, "search", compress_fingerprint(config, "search"))
    state["fingerprint"] = compress_fingerprint(draw_config(config), "search")
    if weights is not None:
        if set(weights) != set(state["model"]):
            raise RuntimeError("the warmed-up supernet and the point's search hold different tensors")
        state["model"] = dict(weights)
    layers = {n: layer.op_names for n, layer in supernet.choice_layers().items()}
    choices, ratio, tries = draw_matched(table, layers, target, seed=seed)
    for name, op in choices.items():
        alpha = state["model"][f"net.{name}.alpha"]
        state["model"][f"net.{name}.alpha"] = torch.where(
            torch.arange(len(alpha)) == layers[name].index(op), torch.tensor(10.0), torch.tensor(-10.0))
    run = Run(run_dir)
    mine = run.checkpoint_path("search")
    mine.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(state, mine)
    record = {"point": search.parent.parent.name, "match": table.name, "target_ratio": target, "draw_ratio": ratio,
              "tolerance": TOLERANCE, "tries": tries, "seed": seed, "choices": choices, **record_extra}
    run.write_file("random_draw.json", record)
    return record


def run_random(ctx: Context, base: nn.Module, run_dir: Path) -> tuple[nn.Module, dict]:
    a = ctx.args
    config = lwdc_config(ctx)
    run = Run(run_dir)
    record = run.read_file("random_draw.json")
    if record is None or not run.checkpoint_path("search").exists():
        point = _point_dir(ctx)
        search = point / "checkpoints" / "search.pt"
        if not search.exists():
            raise SystemExit(f"random draws start from the trained supernet of {point.name}, and {search} is missing "
                             f"(a carried finished point keeps no search): run that LWDC point again on this machine "
                             f"(python -m bench.cifar --method lwdc --lam {a.lam:g} --schedule {a.schedule} ...)")
        supernet = expand(base, ctx.example, a.ops)
        table = build_cost_table(get_cost_model(a.match), supernet, base, ctx.example)
        target = _point_ratio(point, table, supernet)
        weights = warmed_weights(ctx, base, config, point) if a.start == "warmup" else None
        record = seed_draw(search, config, supernet, table, target, draw_seed(a.seed, a.draw), run_dir,
                           weights=weights, match=a.match, draw=a.draw, start=a.start)
        ctx.log(f"draw {a.draw}: {a.match} {record['draw_ratio']:.3f}x against the point's {target:.3f}x after "
                f"{record['tries']:,} tries, starting from the {'warmed-up original' if weights else 'supernet'}")
    result = compress(base, ctx.train, ctx.test, example_input=ctx.example, config=draw_config(config),
                      run_dir=run_dir, log=ctx.log)
    if result.report["choices"] != record["choices"]:
        raise RuntimeError("the derived network is not the draw: the one-hot gates were not kept")
    return result.model, {**lwdc_extra(ctx, result), "random_draw": record, "matches": record["point"]}
