"""Signals benchmark (issue 16): spoken digits (FSDD) and P300 EEG, baseline CNNs against LWDC, to int8 C.

    python -m bench.signals --set fsdd [--models m5 logmel_dscnn] [--splits 0 1 2] [--points macs=0.5x lam=2] [--quick]
    python -m bench.signals --set p300 [--models eegnet farahat1d] [--splits 0 1 ...]   (folds by recording)
    python -m bench.signals --set fsdd --random-draws 5 [--random-match latency:onnxruntime]   (issue 26's draws;
        for a measured cost, first --tables-only on an idle machine, then the draws beside other jobs)

Per data set, model and split (a seed for FSDD's official split; a fold by recording of subject 1 for P300), it
trains the baseline, compresses it with LWDC at each point (a MACs target, the way lwdc is meant to be driven, or
a fixed lambda) and measures every model the same way: the task's
metrics on the test split (for P300: AUC, and balanced accuracy, sensitivity and specificity at the Youden
threshold chosen on the *training* folds' scores, never the test fold's), parameters, MACs, int8 flash and peak
RAM of the C export, the int8 C's metrics on the whole test split, onnxruntime and C latency (batch 1, one thread)
and the search's cost in seconds. P300 folds also get the shrinkage-LDA baseline (bench/baselines.py).

Every run folder (checkpoints) lives under ~/.cache/lwdc/bench/signals, so an interrupted command resumes; each
finished row is one JSON file under bench/results/signals/. ``python -m bench.report_signals`` summarises them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lwdc import CompressConfig, compress, expand
from lwdc.api import LEGACY_DEFAULTS
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.analysis.detection import model_outputs
from lwdc.data import BatchLoader, load_data, random_shift
from lwdc.export import export_c, export_onnx
from lwdc.export.c import compile_library, run_c
from lwdc.export.c.build import time_library
from lwdc.metrics import clinical_metrics, detection_metrics, youden
from lwdc.models import create_model
from lwdc.profiling import count_macs, count_params
from lwdc.runs import Run, write_json
from lwdc.stages import config_fingerprint, train_stage
from lwdc.tasks import Classification, balanced_class_weights
from lwdc.train import TrainConfig

from .baselines import ShrinkageLDA
from .deploy import ort_latency
from .measure import git_info, machine_info
from .random_arch import draw_config, draw_seed, seed_draw

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path.home() / ".cache" / "lwdc" / "bench" / "signals"
OUT = Path(__file__).resolve().parent / "results" / "signals"


@dataclass(frozen=True)
class SetSpec:
    """One data set's protocol: where it is, which models, how each trains and compresses."""
    archive: str
    models: tuple[str, ...]
    splits: tuple[int, ...]          # seeds (fsdd) or folds (p300)
    split_kind: str                  # "seed" or "fold"
    epochs: int
    lr: float
    batch_size: int
    points: tuple[str, ...]          # LWDC runs: "macs=0.5x" (a target, lambda 0) or "lam=2" (a fixed lambda)
    warmup_epochs: float = 1.0
    search_epochs: int = 6
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    clinical: bool = False           # binary detection: class-weighted loss, AUC-first metrics
    shift: int = 0                   # training augmentation: random time shift of up to this many samples
    ops: dict = field(default_factory=dict)   # LWDC operator set per model (default: "default")
    # other CompressConfig settings of the LWDC points; each set keeps the budget law (LEGACY_DEFAULTS: the expected
    # signal) its reported rows ran under, so that a rerun reproduces them and resumes their run folders
    search: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)


SETS = {
    "fsdd": SetSpec("fsdd.tar.gz", ("m5", "logmel_dscnn"), (0, 1, 2), "seed", epochs=30, lr=0.05, batch_size=64,
                    points=("macs=0.5x", "macs=0.3x"), shift=800,      # 0.1 s: words start anywhere in the second
                    # searched at lr 0.01 (0.05 took the converged baseline's supernet from 100% to 11-50% in one
                    # epoch), gates moving 10 logits over the 252 steps, one shared second moment, and the target
                    # ramped over half the search: the best of 8 settings tried on seed 0 (bench notes, issue 16).
                    # The target is met exactly (no 5% tolerance: "at least 50% fewer MACs"), and the derived
                    # network is fine-tuned as long and as fast as the baseline trained: 10 epochs at 0.01 gave
                    # M5 96.7%, 30 at 0.05 gave 99.7% (same search, seed 0)
                    search={"lr": 0.01, "gate_travel": 10.0, "gate_optimizer": "shared-adam", "budget_ramp": 0.5,
                            "budget_tolerance": 0.0, "budget_signal": LEGACY_DEFAULTS["budget_signal"]},
                    finetune_epochs=30, finetune_lr=0.05,
                    ops={"m5": "signal", "logmel_dscnn": "signal"}),   # m5's first conv (80 taps) holds 66% of
                                                                    # the MACs; DS-CNN's pointwise layers 75%
    "p300": SetSpec("eeg_p300_muse.tar.gz", ("eegnet", "farahat1d"), tuple(range(4)), "fold", epochs=40, lr=0.01,
                    batch_size=64, points=("macs=0.5x", "macs=0.3x"), search_epochs=8, finetune_epochs=10, finetune_lr=0.005,
                    clinical=True, ops={"farahat1d": "signal"},   # no shift: epochs are time-locked to the stimulus
                    search={"budget_signal": LEGACY_DEFAULTS["budget_signal"], "budget_ramp": 0.0}),
}
QUICK = dict(epochs=1, search_epochs=1, finetune_epochs=1, warmup_epochs=0.2)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} signals] {msg}", flush=True)


def load_split(spec: SetSpec, source: Path, split: int):
    """The bundle of one split: FSDD's official split (the seed only changes training), or fold ``split``."""
    options = {"fold": split} if spec.split_kind == "fold" else None
    return load_data(str(source), options=options)


def augment_of(spec: SetSpec):
    return random_shift(spec.shift) if spec.shift else None


def task_for(spec: SetSpec, data) -> Classification:
    if not spec.clinical:
        return Classification()
    return Classification(metrics="clinical",
                          class_weights=balanced_class_weights(data.train.y, data.num_classes).tolist())


def scores_metrics(out: np.ndarray, labels: np.ndarray, threshold: float | None = None) -> dict:
    """Accuracy and the clinical metrics of outputs; binary: at ``threshold`` (the training folds' Youden)."""
    m = clinical_metrics(torch.from_numpy(out), torch.from_numpy(labels))
    if out.shape[1] == 2 and threshold is not None:
        p = torch.softmax(torch.from_numpy(out).double(), 1)[:, 1].numpy()
        at = detection_metrics(p, labels, threshold=threshold)
        m = {**m, **at, "accuracy": m["accuracy"], "accuracy_at_threshold": at["accuracy"]}
    return {k: v for k, v in m.items() if k != "per_class"}


def train_threshold(model: nn.Module, data) -> float | None:
    """Youden's threshold on the training split's scores (binary tasks), so the test split tunes nothing."""
    if data.num_classes != 2:
        return None
    out = model_outputs(model, data.train).numpy()
    p = torch.softmax(torch.from_numpy(out).double(), 1)[:, 1].numpy()
    return float(youden(p, data.train.y.numpy())[1])


def c_metrics(model: nn.Module, data, example: torch.Tensor, threshold, tmp: Path, runs: int) -> dict:
    """float32 and int8 C exports (activation ranges from min/max, and MSE-optimal clipping: on raw audio a few
    loud clips stretch min/max, measured 87.0% int8 against 99.0% float for M5, 97.3% with MSE): flash, peak
    RAM, metrics of each C program on the whole test split, latency."""
    calib = data.train.normalize(data.train.x[torch.randperm(len(data.train),
                                                              generator=torch.Generator().manual_seed(0))[:256]])
    xs = data.test.normalize(data.test.x)
    labels = data.test.y.numpy()
    row = {}
    for precision, calibration in (("float32", "minmax"), ("int8", "minmax"), ("int8_mse", "mse")):
        out_dir = tmp / precision
        exp = export_c(model, example, out_dir, int8=precision != "float32", calib=calib, calibration=calibration,
                       log=None)
        s = exp.summary
        feats = xs if exp.summary.get("front_end") is None else exp.front_end(xs)
        exe = compile_library(out_dir, exp.name, opt="-O3")
        try:
            per_run = time_library(exe, feats[:1].numpy(), runs)
        finally:
            shutil.rmtree(exe.parent, ignore_errors=True)
        out = run_c(out_dir, feats).outputs
        row[precision] = {"flash_bytes": s["flash_bytes"], "peak_ram_bytes": s["peak_ram_bytes"],
                          "latency_ms_c": per_run * 1e3, "front_end": s.get("front_end"),
                          "metrics": scores_metrics(np.asarray(out).reshape(len(xs), -1), labels, threshold)}
    return row


def measure(label: str, model: nn.Module, data, example: torch.Tensor, quick: bool) -> dict:
    threshold = train_threshold(model, data)
    row = {"params": count_params(model), "macs": count_macs(model, example), "threshold": threshold,
           "metrics": scores_metrics(model_outputs(model, data.test).numpy(), data.test.y.numpy(), threshold)}
    runs = 20 if quick else 300
    with tempfile.TemporaryDirectory(prefix="lwdc-signals-") as tmp:
        onnx = Path(tmp) / f"{label}.onnx"
        export_onnx(model, example, onnx)
        torch.set_num_threads(1)
        row["latency_ms_onnxruntime"] = ort_latency(onnx, example[:1].numpy(), runs) * 1e3
        row["c"] = c_metrics(model, data, example, threshold, Path(tmp), runs)
    return row


def baseline_fingerprint(spec: SetSpec, model_name: str, split: int, data=None) -> str:
    """What a baseline checkpoint depends on (not the LWDC points, so adding a point reuses the baseline), and
    the data's normalisation where the reader has one (FSDD clips are peak-normalised since it was added)."""
    norm = {"normalization": data.info["normalization"]} if data is not None and "normalization" in data.info else {}
    return config_fingerprint({"model": model_name, "split": split, "archive": spec.archive, "epochs": spec.epochs,
                               "lr": spec.lr, "batch_size": spec.batch_size, "shift": spec.shift,
                               "clinical": spec.clinical, "model_kwargs": spec.model_kwargs, **norm})


def baseline(spec: SetSpec, model_name: str, split: int, data, task, folder: Path, quick: bool) -> nn.Module:
    torch.manual_seed(split if spec.split_kind == "seed" else 0)
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.input_shape[0],
                         **spec.model_kwargs)
    cfg = TrainConfig(epochs=spec.epochs, lr=spec.lr, progress=False, desc="baseline",
                      max_batches=3 if quick else None)
    train = BatchLoader(data.train, spec.batch_size, shuffle=True, augment=augment_of(spec), seed=split,
                        drop_last=True)
    t0 = time.perf_counter()
    history = train_stage("baseline", model, task, train, None, cfg, Run(folder / "baseline"),
                          baseline_fingerprint(spec, model_name, split, data), log=_log)
    model.train_seconds = sum(h.seconds for h in history) or time.perf_counter() - t0
    return model


def row_stem(model_name: str, split_kind: str, split: int, method: str, quick: bool = False) -> str:
    """A row's file name without ``.json``; its run folder is ``<model>_<split kind><split>[_quick]/<method>``."""
    return f"{model_name}_{split_kind}{split}_{method}{'_quick' if quick else ''}"


def point_name(point: str, ops: str = "default") -> str:
    """``lam=2`` -> ``lwdc-lam2``; ``macs=0.5x`` -> ``lwdc-macs0.5x``; another operator set than the default is
    named too (``lwdc-signal-macs0.5x``) (file and folder names)."""
    return "lwdc-" + ("" if ops == "default" else f"{ops}-") + point.replace("=", "").replace(":", "_")


def point_config(spec: SetSpec, point: str, split: int, quick: bool, ops: str = "default") -> CompressConfig:
    key, _, value = point.partition("=")
    lam, budgets = (float(value), None) if key == "lam" else (None, {key: value})
    return CompressConfig(**{**dict(ops=ops, lam=lam, budgets=budgets, warmup_epochs=spec.warmup_epochs,
                                    search_epochs=spec.search_epochs, finetune_epochs=spec.finetune_epochs, lr=spec.lr,
                                    finetune_lr=spec.finetune_lr, seed=split, progress=False,
                                    max_batches=3 if quick else None), **spec.search})


def loaders(spec: SetSpec, data, split: int) -> tuple[BatchLoader, BatchLoader]:
    return (BatchLoader(data.train, spec.batch_size, shuffle=True, augment=augment_of(spec), seed=split,
                        drop_last=True), BatchLoader(data.test, 256))


def lwdc_row(spec: SetSpec, base: nn.Module, point: str, split: int, data, task, folder: Path,
             example: torch.Tensor, quick: bool, ops: str = "default"):
    cfg = point_config(spec, point, split, quick, ops)
    train, test = loaders(spec, data, split)
    result = compress(base, train, test, example_input=example, task=task, config=cfg,
                      run_dir=folder / point_name(point, ops), log=_log, summary=False)
    r = result.report
    wall = r["wall_time_s"]
    return result.model, {"choices": result.choices, "search_seconds": wall.get("warmup", 0) + wall.get("search", 0),
                          "finetune_seconds": wall.get("finetune"), "point": point, "ops": ops,
                          "lambda": cfg.effective_lam,
                          "budgets": r.get("budgets") or [], "macs_ratio": r["ratios"].get("macs")}


def draw_name(point_run: str, draw: int, match: str = "macs") -> str:
    """A draw's row and run folder: ``<point>-random-d<k>``, with the matched cost named when it is not MACs."""
    return f"{point_run}-random-" + ("" if match == "macs" else match.replace(":", "_") + "-") + f"d{draw}"


def random_row(spec: SetSpec, base: nn.Module, point: str, draw: int, point_choices: dict, split: int, data, task,
               folder: Path, example: torch.Tensor, quick: bool, ops: str = "default", match: str = "macs"):
    """Issue 26's protocol on a 1-D task: draw ``draw`` of the LWDC point, operators drawn uniformly per layer
    until the ``match`` cost (MACs, or e.g. ``latency:onnxruntime``) is within 3% of the point's derived network,
    started from the point's trained supernet and fine-tuned with the point's exact settings
    (``bench.random_arch``)."""
    cfg = point_config(spec, point, split, quick, ops)
    run_dir = folder / draw_name(point_name(point, ops), draw, match)
    record = Run(run_dir).read_file("random_draw.json")
    if record is None or not Run(run_dir).checkpoint_path("search").exists():
        search = folder / point_name(point, ops) / "checkpoints" / "search.pt"
        supernet = expand(base, example, ops)
        table = build_cost_table(get_cost_model(match), supernet, base, example)
        layers = supernet.choice_layers()
        target = table.ratio_of({n: layers[n].op_names.index(op) for n, op in point_choices.items()})
        record = seed_draw(search, cfg, supernet, table, target, draw_seed(split, draw), run_dir, match=match)
        _log(f"draw {draw}: {match} {record['draw_ratio']:.3f}x against the point's {target:.3f}x")
    train, test = loaders(spec, data, split)
    result = compress(base, train, test, example_input=example, task=task, config=draw_config(cfg), run_dir=run_dir,
                      log=_log, summary=False)
    if result.choices != record["choices"]:
        raise RuntimeError("the derived network is not the draw: the one-hot gates were not kept")
    return result.model, {"choices": result.choices, "point": point, "ops": ops, "draw": draw, "random_draw": record,
                          "finetune_seconds": result.report["wall_time_s"].get("finetune"),
                          "macs_ratio": result.report["ratios"].get("macs")}


def lda_row(data) -> dict:
    lda = ShrinkageLDA().fit(data.train.x.numpy(), data.train.y.numpy())
    train_scores = lda.score(data.train.x.numpy())
    threshold = float(youden(train_scores, data.train.y.numpy())[1])
    scores = lda.score(data.test.x.numpy())
    m = detection_metrics(scores, data.test.y.numpy(), threshold=threshold)
    return {"metrics": m, "threshold": threshold, "features": "4 channels x 29 window means (decimate 4)"}


#: Settings that say which rows exist, not how any one row is made (a row is one model, split and point, named by
#: its file): adding a point to a set must not measure its finished rows again.
_GRID = ("models", "splits", "points")
#: Settings a baseline or LDA row does not depend on (only the LWDC points read them).
_POINT_ONLY = ("warmup_epochs", "search_epochs", "finetune_epochs", "finetune_lr", "ops", "search")


def _relevant(settings: dict, method: str) -> dict:
    """The settings a row of ``method`` depends on: a row written under other ones is measured again. A search
    setting at its legacy value is the behaviour from before the setting existed (as in compress_fingerprint), so
    pinning it there keeps older rows current."""
    skip = _GRID if method.startswith("lwdc") else _GRID + _POINT_ONLY
    out = {k: v for k, v in settings.items() if k not in skip}
    if "search" in out:
        out["search"] = {k: v for k, v in out["search"].items()
                         if not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}
    return out


def build_match_table(spec: SetSpec, model_name: str, split: int, source: Path, match: str) -> None:
    """Price the (model, split)'s supernet on the ``match`` cost and leave the table in the cost's cache, so a
    measured cost (``latency:onnxruntime``) is timed on an idle machine and the draws that match it, run later
    beside other jobs, only read it. Timing depends on shapes, not weights: an untrained model of the same
    architecture and input prices the same table."""
    data = load_split(spec, source, split)
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.input_shape[0],
                         **spec.model_kwargs).eval()
    example = data.test.normalize(data.test.x[:1])
    ops = spec.ops.get(model_name, "default")
    t0 = time.perf_counter()
    table = build_cost_table(get_cost_model(match), expand(model, example, ops), model, example)
    _log(f"{model_name} split {split}: {match} table of {len(table.layer_costs)} layers ({ops} operators) in "
         f"{time.perf_counter() - t0:.1f} s; the original costs {table.reference:.4g} {table.unit}")


def run_unit(spec_name: str, spec: SetSpec, model_name: str, split: int, source: Path, quick: bool,
             out_dir: Path, cache: Path = CACHE, random_draws: int = 0, random_match: str = "macs") -> list[dict]:
    """Baseline, LWDC points (and LDA on P300) of one (model, split), and ``random_draws`` random architectures
    per point matched on its ``random_match`` cost (issue 26); rows already written are kept."""
    data = load_split(spec, source, split)
    task = task_for(spec, data)
    folder = cache / spec_name / f"{model_name}_{spec.split_kind}{split}{'_quick' if quick else ''}"
    example = data.test.normalize(data.test.x[:1])
    common = {"set": spec_name, "model": model_name, spec.split_kind: split, "split": split, "quick": quick,
              "train": len(data.train), "test": len(data.test), "test_positives": int(data.test.y.sum())
              if data.num_classes == 2 else None, "settings": {**spec.__dict__, "model_kwargs": spec.model_kwargs}}
    rows = []

    def path_of(method: str) -> Path:
        return out_dir / spec_name / f"{row_stem(model_name, spec.split_kind, split, method, quick)}.json"

    def done(method: str) -> bool:
        """A row written under the same settings; one written under others is measured again (its run folder,
        whose checkpoints would be refused, is moved aside)."""
        path = path_of(method)
        if not path.exists():
            return False
        if _relevant(json.loads(path.read_text()).get("settings") or {}, method) == \
                _relevant(json.loads(json.dumps(common["settings"])), method):
            _log(f"{path.name}: finished earlier")
            return True
        _log(f"{path.name}: written under other settings; measuring it again")
        stale = folder / method
        if stale.exists():
            stale.rename(stale.with_name(f"{stale.name}.stale-{int(time.time())}"))
        return False

    def emit(method: str, row: dict) -> None:
        path = path_of(method)
        full = {**common, "method": method, **row, "machine": machine_info(), "git": git_info()}
        write_json(path, full)
        rows.append(full)
        _log(f"{spec_name} {model_name} {spec.split_kind} {split} {method}: "
             + ", ".join(f"{k} {v:.4g}" for k, v in full["metrics"].items() if isinstance(v, float)))

    base = baseline(spec, model_name, split, data, task, folder, quick)
    if not done("baseline"):
        emit("baseline", {**measure("baseline", base, data, example, quick), "train_seconds": base.train_seconds})
    ops = spec.ops.get(model_name, "default")
    for point in spec.points:
        name = point_name(point, ops)
        finished = done(name)           # once: a row of other settings has its run folder moved aside
        # draws need the point's trained supernet; a point recorded elsewhere is searched again here, and as this
        # machine need not reproduce the recorded row, the draws are compared with that rerun (its own row)
        rerun, marker = f"{name}-rerun", folder / f"{name}-rerun"
        if finished and random_draws and not (folder / name / "checkpoints" / "search.pt").exists():
            marker.mkdir(parents=True, exist_ok=True)
        if not finished or (marker.exists() and not done(rerun)):
            model, extra = lwdc_row(spec, base, point, split, data, task, folder, example, quick, ops)
            if not finished:
                emit(name, {**measure(name, model, data, example, quick), **extra})
            else:
                emit(rerun, {**measure(rerun, model, data, example, quick), **extra, "rerun_of": name})
        for draw in range(random_draws):
            drawn = draw_name(name, draw, random_match)
            if done(drawn):
                continue
            choices = json.loads(path_of(name).read_text())["choices"]
            model, extra = random_row(spec, base, point, draw, choices, split, data, task, folder, example, quick, ops,
                                      random_match)
            emit(drawn, {**measure(drawn, model, data, example, quick), **extra})
    if spec.clinical and model_name == spec.models[0] and not done("lda"):
        emit("lda", lda_row(data))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=list(SETS), required=True)
    p.add_argument("--models", nargs="+")
    p.add_argument("--splits", nargs="+", type=int, help="seeds (fsdd) or folds (p300); default: the set's")
    p.add_argument("--points", nargs="+", help="LWDC runs: targets (macs=0.5x) or lambdas (lam=2)")
    p.add_argument("--data", help="the archive or folder (default: ../shared/data/<the set's archive>)")
    p.add_argument("--out-dir", default=str(OUT))
    p.add_argument("--cache-dir", default=str(CACHE), help="run folders (checkpoints)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 batches per epoch, 1 epoch per stage")
    p.add_argument("--random-draws", type=int, default=0, help="random architectures per LWDC point, matched on its "
                   "MACs within 3%% and fine-tuned like it from its trained supernet (issue 26)")
    p.add_argument("--random-match", default="macs", help="the cost a random draw matches within 3%%: macs, or an "
                   "lwdc cost such as latency:onnxruntime (build its table on an idle machine: --tables-only)")
    p.add_argument("--tables-only", action="store_true", help="only price each (model, split)'s supernet on "
                   "--random-match and cache the table (run it on an idle machine before the draws), then stop")
    a = p.parse_args(argv)
    spec = SETS[a.set]
    if a.points:
        spec = replace(spec, points=tuple(a.points))
    if a.quick:
        spec = replace(spec, **QUICK)
    source = Path(a.data) if a.data else SHARED / spec.archive
    if not source.exists():
        raise SystemExit(f"{source} does not exist: pass --data PATH (the {spec.archive} of ../shared/data)")
    torch.set_num_threads(a.threads)
    for model_name in a.models or spec.models:
        for split in a.splits if a.splits is not None else spec.splits:
            if a.tables_only:
                build_match_table(spec, model_name, split, source, a.random_match)
                continue
            run_unit(a.set, spec, model_name, split, source, a.quick, Path(a.out_dir), Path(a.cache_dir),
                     a.random_draws, a.random_match)


if __name__ == "__main__":
    main()
