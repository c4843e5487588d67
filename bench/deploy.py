"""Deployment benchmark: the generated C (float32 and int8) against PyTorch and onnxruntime.

For a trained ResNet-20 (shipped CIFAR-10 subset), an lwdc-compressed ResNet-20, a depthwise-separable
MobileNetV2 and a small network with channel concats, it records: accuracy of PyTorch / float C / int8 C on the
test split, flash and RAM figures of the memory plan, and single-sample latency of the C (gcc -O3, one thread)
against onnxruntime and PyTorch eager (one thread each), as ratios taken in the same run.
Writes bench/results/deploy.json.  Run: python -m bench.deploy [--quick]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lwdc import CompressConfig, compress
from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.export import export_c, export_onnx
from lwdc.export.c import compile_library, evaluate_c
from lwdc.export.c.build import time_library
from lwdc.models import create_model
from lwdc.profiling import measure_latency, median_ms
from lwdc.runs import write_json

from .measure import git_info, machine_info
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, fit

CACHE = Path.home() / ".cache" / "lwdc" / "bench"


class InceptionLite(nn.Module):
    """A small CNN whose blocks concatenate parallel branches along channels (what concat export must handle)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(16, 8, 1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(40, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.AvgPool2d(2))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b3(x), self.bp(x)], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.down(x), 1), 1))


def trained(name: str, model: nn.Module, data, epochs: int, quick: bool) -> nn.Module:
    """Train once and cache the weights outside the repository."""
    path = CACHE / f"{name}_subset_e{epochs}{'_quick' if quick else ''}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model
    train = BatchLoader(data.train, 64, shuffle=True, augment=random_crop_flip(4), seed=0, drop_last=True)
    fit(model, Classification(), train, None, TrainConfig(epochs=epochs, lr=0.1, progress=False,
                                                          max_batches=3 if quick else None), log=lambda s: None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def ort_latency(path: Path, x: np.ndarray, runs: int) -> float:
    """Median seconds of one run of the exported file itself (the artefact a user deploys), one thread."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    return median_ms(lambda: s.run(None, feed), repeats=runs, warmup=max(runs // 10, 3)) / 1e3


def bench_model(label: str, model: nn.Module, data, eval_n: int, runs: int, tmp: Path) -> dict:
    model.eval()
    xs = torch.stack([data.test[i][0] for i in range(eval_n)])
    ys = torch.tensor([data.test[i][1] for i in range(eval_n)])
    calib = torch.stack([data.train[i][0] for i in range(256)])
    example = xs[:4]
    with torch.no_grad():
        acc_torch = float((model(xs).argmax(1) == ys).float().mean() * 100)
    row: dict = {"model": label, "accuracy_pytorch": acc_torch, "eval_samples": eval_n}
    onnx_path = tmp / f"{label}.onnx"
    row["onnx_check"] = export_onnx(model, example, onnx_path)["max_abs_diff_vs_pytorch"]
    sample = xs[:1].numpy()
    torch.set_num_threads(1)
    row["latency_ms_onnxruntime"] = ort_latency(onnx_path, sample, runs) * 1e3
    row["latency_ms_pytorch"] = measure_latency(model, xs[:1], repeats=runs)
    for precision, calibration in (("float32", "minmax"), ("int8", "minmax"), ("int8_mse", "mse")):
        out = tmp / f"{label}_{precision}"
        exp = export_c(model, example, out, int8=precision != "float32", calib=calib, calibration=calibration)
        s = exp.summary
        exe = compile_library(out, "model", opt="-O3", extra=("-march=native",))
        per_run = time_library(exe, sample, runs)
        shutil.rmtree(exe.parent, ignore_errors=True)
        row[precision] = {k: s[k] for k in ("macs", "params", "flash_bytes", "arena_bytes", "scratch_bytes",
                                             "peak_ram_bytes", "lower_bound_bytes", "naive_bytes",
                                             "arena_over_lower_bound", "verified")}
        row[precision]["accuracy_c"] = evaluate_c(exp, xs, ys)["accuracy"]
        row[precision]["latency_ms_c"] = per_run * 1e3
        row[precision]["c_over_onnxruntime"] = per_run * 1e3 / row["latency_ms_onnxruntime"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a smoke run: few batches of training, few samples")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--compress-epochs", type=int, default=4, help="search and fine-tune epochs of the LWDC model")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "deploy.json"))
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)   # training too: on a shared machine one thread is faster than two fighting
    data = load_data("cifar10-subset")
    eval_n, runs = (50, 20) if a.quick else (1000, 200)
    t0 = time.perf_counter()
    resnet = trained("resnet20", create_model("resnet20"), data, a.epochs, a.quick)
    inception = trained("inception_lite", InceptionLite(), data, a.epochs, a.quick)
    train = BatchLoader(data.train, 64, shuffle=True, augment=random_crop_flip(4), seed=0, drop_last=True)
    test = BatchLoader(data.test, 256)
    n = 1 if a.quick else a.compress_epochs
    cfg = CompressConfig(lam=1.0, search_epochs=n, finetune_epochs=n,
                         max_batches=3 if a.quick else None, progress=False)
    base = create_model("resnet20")
    base.load_state_dict(resnet.state_dict())
    lwdc_model = compress(base, train, test, task=Classification(), config=cfg, log=lambda s: None).model
    models = {"resnet20": resnet, "resnet20_lwdc_lam1": lwdc_model,
              "mobilenetv2_w0.5": create_model("mobilenetv2", width=0.5), "inception_lite": inception}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in models.items():
            rows.append(bench_model(label, model, data, eval_n, runs, Path(tmp)))
            r = rows[-1]
            print(f"{label}: acc torch {r['accuracy_pytorch']:.1f} C f32 {r['float32']['accuracy_c']:.1f} "
                  f"int8 {r['int8']['accuracy_c']:.1f}; latency ms ort {r['latency_ms_onnxruntime']:.3f} "
                  f"C f32 {r['float32']['latency_ms_c']:.3f} ({r['float32']['c_over_onnxruntime']:.2f}x) "
                  f"int8 {r['int8']['latency_ms_c']:.3f} ({r['int8']['c_over_onnxruntime']:.2f}x); "
                  f"int8 with MSE calibration: acc {r['int8_mse']['accuracy_c']:.1f}", flush=True)
    result = {"benchmark": "deploy", "quick": a.quick, "train_epochs": a.epochs, "compress_epochs": n, "rows": rows, "wall_s": time.perf_counter() - t0,
              "notes": "mobilenetv2_w0.5 is untrained (timing and memory only); latency is one sample, one thread; "
                       "int8 uses min/max activation ranges, int8_mse the MSE-optimal clipping ranges",
              "machine": {**machine_info(),
                          "cc": subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]},
              "git": git_info()}
    write_json(Path(a.out), result)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
