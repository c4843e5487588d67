"""Time the finished models of a schedule again, all in one process and alternating, on (ideally) an idle machine.

    python -m bench.remeasure [--schedule cpu-converged] [--rounds 5] [--no-onnx]
    python -m bench.remeasure --signals fsdd        (bench.signals' rows of one set: points, draws, baselines)

Each run measured its latency right after training, beside its baseline, while other jobs shared the CPU: its
ratios are fair, its absolute figures carry that moment's load, and two runs' figures are not comparable. This
command loads the final model of every finished run of a schedule (one per result in ``--results``) into one
process and times them round-robin on one thread: in every round each model gets one eager batch-1 median and one
onnxruntime batch-1 median, the order rotating from round to round, so a burst of load hits all models alike.
It writes ``<results>/../latency_<schedule>.json`` with each model's rounds, their median and spread; bench.report
prefers these figures to the in-run ones where a model and its baseline were both re-measured, and reads each
model's fastest round (load on a shared CPU only ever slows a round: ``bench.report_latency.fastest_round``).

Models come from the run folders in ``--cache-dir``: the saved final model (``model_state.pt`` +
``model_arch.json``, what every run writes since bench.remeasure exists, and LWDC runs always did), else, for runs
that predate it, the baseline's checkpoint (baseline, baseline-extended) or the baseline pruned again at the
recorded ratio with the fine-tuned weights of its checkpoint (prune-l1, prune-l1-global). Every model is timed
in the same form, rebuilt from its architecture description (lwdc.arch), so none has less Python overhead
than another.

With ``--signals SET`` it does the same for bench.signals' rows of one set (``bench/results/signals/latency_<SET>.json``):
every LWDC point, rerun and random draw whose run folder holds its saved model, and per (model, split) the
original network those folders saved, so issue 26's 1-D table compares draws and search in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from lwdc.arch import ArchitectureError, build, describe
from lwdc.models import create_model
from lwdc.profiling import measure_latency, median_ms, onnx_session
from lwdc.runs import CheckpointError, Run, RunError, load_checkpoint, write_json

from .configs import baseline_schedule
from .context import DEFAULT_CACHE, DEFAULT_OUT, folder_name, result_stem
from .measure import git_info, machine_info

__all__ = ["load_model", "measure", "remeasure", "remeasure_signals", "latency_path", "signals_latency_path"]

INPUT_SHAPE = (3, 32, 32)       # CIFAR; a saved architecture records its own


def latency_path(results: Path, schedule: str) -> Path:
    return Path(results).parent / f"latency_{schedule}.json"


def _folders(r: dict, cache: Path) -> tuple[Path, Path]:
    """The run folder of result ``r`` and the folder of the baseline it started from."""
    width, mb = r.get("width", 1.0), r.get("max_batches")
    name = r.get("run") or (r["method"] if r["method"] in ("baseline", "baseline-extended") else None)
    if name is None:
        raise RunError(f"a {r['method']} result of {r['schedule']} records no run name (it predates them)")
    run_dir = cache / folder_name(r["model"], r["schedule"], r["seed"], width, mb) / name
    base = cache / folder_name(r["model"], baseline_schedule(r["schedule"]), r.get("baseline_seed", r["seed"]),
                               width, mb) / "baseline"
    return run_dir, base


def _checkpoint_model(path: Path, stage: str, model: nn.Module) -> nn.Module:
    model.load_state_dict(load_checkpoint(path, stage, required=("model",))["model"])
    return model.eval()


def _original(r: dict, base_dir: Path) -> nn.Module:
    state = load_checkpoint(base_dir / "checkpoints" / "train.pt", "train", required=("model",))["model"]
    classes = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2][-1].shape[0]
    model = create_model(r["model"], num_classes=classes, width=r.get("width", 1.0))
    model.load_state_dict(state)
    return model.eval()


def _derived_again(r: dict, base_dir: Path) -> nn.Module:
    """An LWDC run's network rebuilt from the baseline and the operators it chose: the same layers, shapes, MACs
    and latency as its final model, not its fine-tuned weights (a run whose folder was lost keeps its choices)."""
    from lwdc.derivation import derive
    from lwdc.space import expand

    supernet = expand(_original(r, base_dir), torch.zeros(1, *INPUT_SHAPE), r["ops"])
    return derive(supernet, r["choices"]).eval()


def load_model(r: dict, cache: Path) -> tuple[nn.Module, str]:
    """The final model of result ``r`` and where it came from; ``RunError`` when its folder cannot rebuild it."""
    run_dir, base_dir = _folders(r, cache)
    try:
        if Run(run_dir).has_model("model"):
            return Run(run_dir).load_model("model"), "saved model"
        if r["method"] == "baseline":
            return _original(r, base_dir), "baseline checkpoint"
        if r["method"] == "baseline-extended":
            return _checkpoint_model(run_dir / "checkpoints" / "train.pt", "train", _original(r, base_dir)), \
                "run checkpoint"
        if r["method"] == "lwdc" and r.get("choices"):
            return _derived_again(r, base_dir), "architecture from its recorded choices (baseline weights)"
        plan = Run(run_dir).read_file("prune.json")
        if r["method"] in ("prune-l1", "prune-l1-global") and plan is not None:
            from .pruning import prune

            x = torch.zeros(1, *INPUT_SHAPE)
            pruned = prune(_original(r, base_dir), x, plan["ratio"], r["method"] == "prune-l1-global")
            return _checkpoint_model(run_dir / "checkpoints" / "finetune.pt", "finetune", pruned), \
                "baseline pruned again + run checkpoint"
    except (CheckpointError, FileNotFoundError, KeyError, IndexError, RuntimeError) as exc:
        raise RunError(f"{run_dir}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}") from None
    raise RunError(f"{run_dir}: no saved model and no checkpoints to rebuild it from (finished before models were "
                   "saved, and carried without its checkpoints)")


def uniform(model: nn.Module) -> nn.Module:
    """``model`` rebuilt from its architecture description (what Run.load_model returns), else as it is."""
    try:
        rebuilt = build(describe(model))
    except ArchitectureError:
        return model.eval()
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt.eval()


def _summary(values: list[float]) -> dict:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "spread": (max(values) - min(values)) / med,
            "rounds": values}


def measure(models: dict[str, nn.Module], rounds: int, onnx: bool = True, log=print,
            input_shape: tuple[int, ...] = INPUT_SHAPE) -> dict[str, dict]:
    """Batch-1 latency (ms, one thread) of every model: ``rounds`` rounds, each timing every model once per
    backend, the starting model rotating; per model and backend the median over rounds and the spread."""
    keys = list(models)
    x = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0))
    sessions = {k: onnx_session(models[k], x, threads=1) for k in keys} if onnx else {}
    times: dict[str, dict[str, list[float]]] = {k: {"eager_b1": [], **({"ort_b1": []} if onnx else {})}
                                                for k in keys}
    for n in range(rounds):
        for k in keys[n % len(keys):] + keys[:n % len(keys)]:
            times[k]["eager_b1"].append(measure_latency(models[k], x, repeats=30, threads=1))
            if onnx:
                feed = {sessions[k].get_inputs()[0].name: x.numpy()}
                times[k]["ort_b1"].append(median_ms(lambda: sessions[k].run(None, feed), repeats=200))
        log(f"round {n + 1}/{rounds} done")
    return {k: {backend: _summary(v) for backend, v in t.items()} for k, t in times.items()}


def remeasure(results: Path, cache: Path, schedule: str, rounds: int = 5, onnx: bool = True, log=print) -> dict:
    """Re-measure every finished run of ``schedule`` found in ``results``; returns (and writes) the latency file."""
    torch.set_num_threads(1)
    found = {p.stem: json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))}
    found = {k: r for k, r in found.items() if r.get("schedule") == schedule}
    models, entries, skipped = {}, {}, {}
    for stem, r in found.items():
        try:
            model, source = load_model(r, cache)
        except RunError as exc:
            skipped[stem] = str(exc)
            log(f"skipped {stem}: {exc}")
            continue
        bseed = r.get("baseline_seed", r["seed"])
        base = result_stem(r["model"], schedule, "baseline", bseed, r.get("width", 1.0), r.get("max_batches"))
        models[stem] = uniform(model)
        entries[stem] = {"run": r.get("run", r["method"]), "method": r["method"], "seed": r["seed"], "baseline": base,
                         "source": source}
    if not models:
        raise SystemExit(f"no model of schedule {schedule} could be loaded from {cache} ({len(found)} result(s) in "
                         f"{results})")
    log(f"timing {len(models)} models over {rounds} rounds (one thread, onnxruntime {'on' if onnx else 'off'})")
    started, load = time.perf_counter(), os.getloadavg()[0]
    for stem, figures in measure(models, rounds, onnx, log).items():
        entries[stem].update(figures)
    return _write(latency_path(results, schedule), {"schedule": schedule}, rounds, entries, skipped, started, load,
                  "all models in one process, one thread", log)


def _write(path: Path, what: dict, rounds: int, entries: dict, skipped: dict, started: float, load: float,
           where: str, log) -> dict:
    """The latency file: what was timed, how, on which machine and code, and each model's figures."""
    out = {**what, "rounds": rounds, "threads": 1, "models": entries, "skipped": skipped,
           "wall_s": time.perf_counter() - started, "load_average_1m_before": load,
           "machine": machine_info(), "git": git_info(), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
           "notes": "median over rounds of per-round medians (eager: 30+ calls, onnxruntime: 200+ calls, each after "
                    f"a warm-up); spread = (max - min) / median over rounds; {where}"}
    write_json(path, out)
    log(f"{len(entries)} model(s), {len(skipped)} skipped -> {path}")
    return out


def signals_latency_path(results: Path, set_name: str) -> Path:
    return Path(results) / f"latency_{set_name}.json"


def _signal_models(results: Path, cache: Path, set_name: str, log=print) -> tuple[dict, dict, dict]:
    """The models of one set's rows that can be rebuilt here, their entries, and the rows skipped (why)."""
    from .signals import row_stem

    rows = [json.loads(p.read_text()) for p in sorted((Path(results) / set_name).glob("*.json"))]
    reruns = {(r["model"], r["split"], r["rerun_of"], r.get("quick", False)) for r in rows if "rerun_of" in r}
    models, entries, skipped = {}, {}, {}
    for r in rows:
        kind, quick = r["settings"]["split_kind"], r.get("quick", False)
        unit = Path(cache) / set_name / f"{r['model']}_{kind}{r['split']}{'_quick' if quick else ''}"
        stem = row_stem(r["model"], kind, r["split"], r["method"], quick)
        if not r["method"].startswith("lwdc"):
            continue                    # baselines are timed from the originals the LWDC folders saved
        if (r["model"], r["split"], r["method"], quick) in reruns:
            skipped[stem] = "searched again here: its rerun row holds the model of this folder"
            continue
        folder = unit / r.get("rerun_of", r["method"])
        base = row_stem(r["model"], kind, r["split"], "baseline", quick)
        try:
            models[stem] = uniform(Run(folder).load_model("model", r["model"]))
            if base not in models:
                models[base] = uniform(Run(folder).load_model("original", r["model"]))
                entries[base] = {"row": "baseline", "source": f"{folder.name}/original", "baseline": base,
                                 "input_shape": list(Run(folder).input_shape("original"))}
        except (RunError, CheckpointError, FileNotFoundError) as exc:
            models.pop(stem, None)
            skipped[stem] = str(exc)
            log(f"skipped {stem}: {exc}")
            continue
        entries[stem] = {"row": r["method"], "source": f"{folder.name}/model", "baseline": base,
                         "input_shape": list(Run(folder).input_shape("model"))}
    return models, entries, skipped


def remeasure_signals(results: Path, cache: Path, set_name: str, rounds: int = 5, onnx: bool = True,
                      log=print) -> dict:
    """Re-time bench.signals' rows of ``set_name`` (``results`` is bench/results/signals) together, per input
    shape; returns (and writes) ``latency_<set_name>.json``."""
    torch.set_num_threads(1)
    models, entries, skipped = _signal_models(results, cache, set_name, log)
    if not models:
        raise SystemExit(f"no model of the {set_name} rows in {results} could be loaded from {cache}")
    started, load = time.perf_counter(), os.getloadavg()[0]
    shapes: dict[tuple, list[str]] = {}
    for stem, e in entries.items():
        shapes.setdefault(tuple(e["input_shape"]), []).append(stem)
    for shape, stems in shapes.items():
        log(f"timing {len(stems)} models of input {shape} over {rounds} rounds")
        for stem, figures in measure({s: models[s] for s in stems}, rounds, onnx, log, shape).items():
            entries[stem].update(figures)
    return _write(signals_latency_path(results, set_name), {"set": set_name}, rounds, entries, skipped, started,
                  load, "models of one input shape in one process, one thread; baselines are the original networks "
                  "the LWDC run folders saved", log)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", default="cpu-converged", help="the schedule whose finished runs to time")
    p.add_argument("--rounds", type=int, default=5, help="rounds over all models (each round times each once)")
    p.add_argument("--results", default=str(DEFAULT_OUT), help="bench.cifar's result JSON files")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="bench.cifar's run folders")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="eager only")
    p.add_argument("--signals", metavar="SET", help="time bench.signals' rows of SET (fsdd, p300) instead of a "
                   "CIFAR schedule; --results and --cache-dir default to bench.signals' own")
    a = p.parse_args(argv)
    if a.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    if a.signals:
        from .signals import CACHE as SIGNALS_CACHE, OUT as SIGNALS_OUT

        results = Path(a.results) if a.results != str(DEFAULT_OUT) else SIGNALS_OUT
        cache = Path(a.cache_dir).expanduser() if a.cache_dir != str(DEFAULT_CACHE) else SIGNALS_CACHE
        return remeasure_signals(results, cache, a.signals, a.rounds, a.onnx)
    return remeasure(Path(a.results), Path(a.cache_dir).expanduser(), a.schedule, a.rounds, a.onnx)


if __name__ == "__main__":
    main()
