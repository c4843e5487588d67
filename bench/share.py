"""Weight-sharing benchmark (issue 20): the accuracy-driven second method against two baselines at the same bits,
and chained after LWDC.

    python -m bench.share --set cifar [--sources baseline lwdc] [--methods share kmeans-4 ptq-int8 ...]
    python -m bench.share --set fsdd  [--sources baseline lwdc]

Sources are models other benchmarks trained and cached: ``cifar`` the ResNet-20 baseline of the cpu-converged
schedule (``bench.cifar``, seed 0) and its LWDC lambda-0.6 run; ``fsdd`` the M5 baseline of seed 0
(``bench.signals``) and its LWDC ``macs=0.5x`` run. Methods, each on a copy of the source:

* ``share``     ``lwdc.methods.share.share_greedy`` (decisions on a seeded 10% of the training set, never the
  test split), then fine-tuning with the codebooks trainable;
* ``kmeans-K``  the same pruning, then every layer shared at ``K`` values by k-means, no ranking and no budget,
  then the same fine-tuning (the "one size everywhere" baseline);
* ``ptq-intB``  uniform, symmetric, per-output-channel B-bit post-training quantisation of every weight (no
  pruning, no retraining; activations stay float).

Each row: test accuracy beside the source's, stored weight bits (``layer_bits``: codebook + codes and zeros as
the C export writes them; PTQ: B bits per weight + one float32 scale per channel), compression = 32-bit weights /
stored bits, MACs, and for the shared models the flash and RAM of the float C export in both decode modes.
Run folders (checkpoints: the greedy loop and fine-tuning resume) live under ``~/.cache/lwdc/bench/share``;
each finished row is one JSON under ``bench/results/share/``.
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.methods.codebook import (global_magnitude_masks, layer_bits, materialize, prunable_layers, prune,
                                   share_layer)
from lwdc.methods.share import ShareSettings, holdout_split, share_greedy
from lwdc.models import create_model
from lwdc.profiling import count_macs, count_params
from lwdc.runs import Run, load_checkpoint, write_json
from lwdc.stages import config_fingerprint, train_stage
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, evaluate, fit

from .measure import git_info, machine_info

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "lwdc" / "bench"
OUT = Path(__file__).resolve().parent / "results" / "share"


@dataclass(frozen=True)
class Protocol:
    share: dict                     # ShareSettings fields
    finetune_epochs: int
    finetune_lr: float
    batch_size: int
    # where the greedy loop decides: "train-holdout" (a seeded 10% of the training set, held out of the brief
    # retraining) or "test-half" (a seeded half of the test split; every row then reports on the other half)
    decide_on: str = "train-holdout"


PROTOCOLS = {
    # ResNet-20: one retraining pass is 100 batches (12,800 images, ~1 min on one thread here), pruning gets three;
    # the fine-tune is three epochs at a quarter of the LWDC fine-tune's rate. The baseline trained on all 50,000
    # training images, so a held-out share of them is memorised (94.98% there against 87.93% on the test split; a
    # first try pruned to 50% lost 1.78 points on it, the whole budget): the loop decides on half of the test
    # split and every row reports on the other half.
    "cifar": Protocol(dict(sparsity=0.3, ladder=(2, 4, 8, 16), budget=1.0, prune_epochs=3, retrain_epochs=1,
                           lr=0.01, max_batches=100), finetune_epochs=3, finetune_lr=0.005, batch_size=128,
                      decide_on="test-half"),
    # M5 on spoken digits: 2,700 training clips, one retraining pass is one epoch (42 batches). A first try with
    # 2 pruning epochs, 1 retraining epoch and 5 fine-tuning epochs at 0.002 lost 2.0 points on the test split
    # (train accuracy 98.7 at the end: the shared model was still recovering), so all three are longer. The
    # held-out clips score as the test split does (99.26 and 99.33%), and the test split has only 300 clips.
    "fsdd": Protocol(dict(sparsity=0.5, ladder=(2, 4, 8, 16), budget=1.0, prune_epochs=5, retrain_epochs=2,
                          lr=0.01), finetune_epochs=10, finetune_lr=0.01, batch_size=64),
}
METHODS = ("share", "kmeans-2", "kmeans-4", "kmeans-16", "kmeans-64", "ptq-int8", "ptq-int4")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} share] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------ sources
def _cifar(source: str):
    data = load_data(str(SHARED / "cifar10-jpeg.tar.gz"))
    folder = CACHE / "cifar" / "resnet20_cpu-converged_s0"
    if source == "baseline":
        model = create_model("resnet20", num_classes=data.num_classes)
        model.load_state_dict(load_checkpoint(folder / "baseline" / "checkpoints" / "train.pt", "train",
                                              ("model",))["model"])
    else:
        model = Run(folder / "lwdc-default-lam0.6-noise0.25").load_model("model")
    return data, model.eval(), random_crop_flip(4), {"baseline": "resnet20 cpu-converged seed 0",
                                                     "lwdc": "resnet20 cpu-converged LWDC lambda 0.6"}[source]


def _fsdd(source: str):
    from .signals import SETS, augment_of
    data = load_data(str(SHARED / "fsdd.tar.gz"))
    folder = CACHE / "signals" / "fsdd" / "m5_seed0"
    if source == "baseline":
        model = create_model("m5", num_classes=data.num_classes, in_channels=data.input_shape[0])
        model.load_state_dict(load_checkpoint(folder / "baseline" / "checkpoints" / "baseline.pt", "baseline",
                                              ("model",))["model"])
    else:
        model = Run(folder / "lwdc-signal-macs0.5x").load_model("model")
    return data, model.eval(), augment_of(SETS["fsdd"]), {"baseline": "m5 fsdd seed 0",
                                                          "lwdc": "m5 fsdd seed 0, LWDC macs=0.5x"}[source]


SOURCES = {"cifar": _cifar, "fsdd": _fsdd}


# ------------------------------------------------------------------------------------------------ methods
def ptq_weights(model: nn.Module, bits: int) -> int:
    """Round every prunable layer's weight, in place, to ``bits``-bit symmetric integers times one float scale per
    output channel (max |w| / (2^(bits-1) - 1)); returns the stored bits."""
    levels = 2 ** (bits - 1) - 1
    stored = 0
    with torch.no_grad():
        for m in prunable_layers(model).values():
            w = m.weight
            scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / levels
            shape = (-1,) + (1,) * (w.dim() - 1)
            w.copy_((w / scale.view(shape)).round().clamp(-levels, levels) * scale.view(shape))
            stored += bits * w.numel() + 32 * w.shape[0]
    return stored


def _kmeans_everywhere(model: nn.Module, k: int, settings: ShareSettings, task, train, log) -> int:
    """The baseline without the greedy ranking: the same pruning and retraining, then every layer at ``k``."""
    prune(model, global_magnitude_masks(model, settings.sparsity))
    fit(model, task, train, None, TrainConfig(epochs=settings.prune_epochs, lr=settings.lr, weight_decay=0.0,
                                              progress=False, max_batches=settings.max_batches), log=lambda m: None)
    stored = 0
    for m in prunable_layers(model).values():
        shared = share_layer(m, k)
        stored += layer_bits(shared.mask.numel(), int(shared.mask.sum()), k)["bits"]
    log(f"kmeans-{k}: every layer shared at {k} values")
    return stored


def run_row(set_name: str, source: str, method: str, out_dir: Path = OUT, threads: int = 1,
            budget: float | None = None) -> dict:
    """One row; ``budget`` overrides the protocol's accuracy budget of the greedy loop (a row of its own,
    ``share-b<budget>``)."""
    torch.set_num_threads(threads)
    protocol = PROTOCOLS[set_name]
    if budget is not None:
        protocol = Protocol(**{**asdict(protocol), "share": {**protocol.share, "budget": budget}})
    settings = {"protocol": {**asdict(protocol), "share": {**protocol.share, "ladder": list(protocol.share["ladder"])}}}
    label = method if budget is None else f"{method}-b{budget:g}"
    out = out_dir / f"{set_name}_{source}_{label}.json"
    if out.exists() and json.loads(out.read_text()).get("settings") == settings:
        _log(f"{out.name}: finished earlier")
        return json.loads(out.read_text())
    data, model, augment, described = SOURCES[set_name](source)
    task = Classification()
    decide, test, reported_on = _evaluation_split(data, protocol)
    example = data.test.normalize(data.test.x[:1])
    start_accuracy = evaluate(model, task, test)["accuracy"]
    original_bits = 32 * sum(m.weight.numel() for m in prunable_layers(model).values())
    _log(f"{set_name} {source} ({described}): test accuracy {start_accuracy:.2f}; {method}")
    t0 = time.perf_counter()
    work = copy.deepcopy(model)
    run = Run(CACHE / "share" / set_name / f"{source}-{label}-{config_fingerprint(settings)[:8]}")
    row: dict = {}
    if method.startswith("ptq-int"):
        stored = ptq_weights(work, int(method.removeprefix("ptq-int")))
    else:
        share = ShareSettings.from_dict(protocol.share)
        train_all = BatchLoader(data.train, protocol.batch_size, shuffle=True, augment=augment, seed=0,
                                drop_last=True)
        if decide is None:
            train, val, where = holdout_split(train_all, share.holdout, seed=0)
        else:
            train, val, where = train_all, decide, "a seeded half of the test split (the other half reports)"
        if method == "share":
            r = share_greedy(work, task, train, val, share, log=_log, run=run)
            stored = r.stored_bits
            row.update(decided_on=where, greedy={"start": r.start, "pruned": r.pruned, "final": r.final},
                       layers=r.layers)
        else:
            stored = _kmeans_everywhere(work, int(method.removeprefix("kmeans-")), share, task, train, _log)
        tune = TrainConfig(epochs=protocol.finetune_epochs, lr=protocol.finetune_lr, weight_decay=0.0,
                           progress=False, desc="finetune")
        train_stage("finetune", work, task, train_all, None, tune, run, config_fingerprint(settings), log=_log)
        materialize(work)
    seconds = time.perf_counter() - t0
    accuracy = evaluate(work, task, test)["accuracy"]
    row = {"set": set_name, "source": source, "source_model": described, "method": label, "reported_on": reported_on,
           "accuracy": accuracy, "source_accuracy": start_accuracy, "delta": accuracy - start_accuracy,
           "original_bits": original_bits, "stored_bits": stored, "compression": original_bits / stored,
           "bits_per_weight": 32 * stored / original_bits, "params": count_params(work),
           "macs": count_macs(work, example), "seconds": seconds, **row, "c": c_storage(work, example),
           "settings": settings, "machine": machine_info(), "git": git_info()}
    run.save_model("model", work, example, portable=False)     # as data, for later re-measuring or export
    run.write_file("result.json", row)                        # a finished row (bench.carry keeps only this)
    write_json(out, row)
    _log(f"{label}: accuracy {accuracy:.2f} ({row['delta']:+.2f}), compression {row['compression']:.1f}x -> {out}")
    return row


def _evaluation_split(data, protocol: Protocol):
    """``(decision loader or None, reporting loader, description)`` under ``protocol.decide_on``."""
    if protocol.decide_on == "train-holdout":
        return None, BatchLoader(data.test, 256), "the test split"
    n = len(data.test)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    return (BatchLoader(data.test.subset(order[:n // 2]), 256), BatchLoader(data.test.subset(order[n // 2:]), 256),
            f"the other half of the test split ({n - n // 2} samples, seed 0)")


def c_storage(model: nn.Module, example: torch.Tensor) -> dict | None:
    """Flash and RAM of the float C export, weights dense and codebook-coded (both decode modes); None where
    the exporter is not available for this model."""
    from lwdc.export import export_c
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("dense", "startup", "on-the-fly"):
            try:
                e = export_c(model.eval(), example, Path(tmp) / mode, int8=False, weights=mode)
            except Exception as exc:   # noqa: BLE001 - recorded, not fatal: the accuracy row still stands
                return {"error": f"{type(exc).__name__}: {exc}"[:300]}
            out[mode] = {k: e.summary[k] for k in ("flash_bytes", "peak_ram_bytes") if k in e.summary}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=sorted(PROTOCOLS), required=True)
    p.add_argument("--sources", nargs="+", default=["baseline", "lwdc"], choices=["baseline", "lwdc"])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--budget", type=float, help="share: another accuracy budget than the protocol's (its own row)")
    p.add_argument("--out-dir", default=str(OUT))
    a = p.parse_args(argv)
    for source in a.sources:
        for method in a.methods:
            if source == "lwdc" and method != "share":
                continue            # the chained row; the baselines compare on the uncompressed source
            run_row(a.set, source, method, Path(a.out_dir), a.threads, a.budget if method == "share" else None)


if __name__ == "__main__":
    main()
