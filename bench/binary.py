"""Binary operators on the shipped CIFAR-10 subset (issue 19, accuracy part): one small CNN as float32, int8, an
all-binary body, and LWDC searches with and without binary operators at flash targets.

    python -m bench.binary [--rows float binary:bin3x3:adamw-clip lwdc-binary-noskip:flash=16KiB ...]
                           [--epochs 8] [--quick] [--force]       (default: every row in ROWS, ~45 min here)
    python -m bench.binary --rows lwdc-binary:flash=16KiB --gate-travel 10 --force   (the gate_travel row)

Data: the CIFAR-10 subset inside the package (5,000 train / 1,000 test images, 32 x 32), not FSDD: it loads
instantly (FSDD decodes 3,000 WAVs and needs an audio front end in C), its operators are the 2-D ``bin3x3`` the
issue names, and a 5-layer CNN of width 32 trains one epoch in ~15 s on one loaded core of this machine to a
meaningful accuracy (far above the 10% of chance) in 8 epochs.

Architecture (``Net``, the same in every row): conv3x3 3->32 (real, reads the input), maxpool, conv3x3 32->32,
conv3x3 32->32, maxpool, conv3x3 32->64, conv3x3 64->64, maxpool, conv1x1 64->10 (real, writes the output),
global average pool. Every conv has a BatchNorm and ReLU after it except the last. The body (the four middle
3x3 convs) is what binary operators may replace; 32 and 64 channels fill the C kernels' 32-bit words exactly.

Rows (each one JSON under bench/results/binary/, skipped when present unless --force):
- ``float``: trained float32 (AdamW, cosine, random crop + flip); its int8 C export measured on the whole test split.
- ``binary:<op>:<recipe>``: the float model with every body conv replaced by ``bin3x3`` (BinaryConv2d) or
  ``birealbin3x3`` (BiRealBlock where channels allow, bin3x3 on the 32->64 conv), started from the float weights,
  trained with the recipe (``RECIPES``: optimiser, lr, latent-weight clipping).
- ``lwdc-binary:flash=<B>`` / ``lwdc-int8:flash=<B>``: ``lwdc.compress`` of the float model with the ``binary``
  operator set or the ``default`` one, ``budgets={"flash": B}`` (int8 C bytes); ``lwdc-binary-noskip`` /
  ``lwdc-int8-noskip``: the same sets without ``skip`` (``OPS``). AdamW (search lr 1e-3, fine-tuning 2e-3).

Every row: accuracy (PyTorch, test split), int8 C accuracy (the host-compiled int8 C program on the whole test
split; it equals the integer reference bit for bit, which every export checks), flash and peak RAM from the int8
export's summary (packed activations where binary layers chain), ``lwdc.costs.flash.flash_bytes``, MACs (binary:
BOPs / 64), and instructions of one inference on the emulated Cortex-M4 (``count_instructions`` on an export with
target="cortex-m4"). Checkpoints and run folders live under ~/.cache/lwdc/bench/binary so reruns resume.
``section(results_dir)`` renders the docs/RESULTS.md table.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from lwdc import compress
from lwdc.api import LEGACY_DEFAULTS
from lwdc.binary import BINARY_CONVS, BiRealBlock, BinaryConv2d, clip_latent_weights
from lwdc.costs.flash import flash_bytes
from lwdc.data import BatchLoader, load_data, random_crop_flip
from lwdc.export import export_c
from lwdc.export.c.instructions import count_instructions
from lwdc.export.c.targets import get_target
from lwdc.profiling import count_macs, count_params
from lwdc.runs import write_json
from lwdc.stages import config_fingerprint

from .measure import git_info, int8_c_figures, machine_info

CACHE = Path.home() / ".cache" / "lwdc" / "bench" / "binary"
OUT = Path(__file__).resolve().parent / "results" / "binary"
MARKERS = ("<!-- bench:binary:start -->", "<!-- bench:binary:end -->")
BODY = ("c1", "c2", "c3", "c4")

# training recipes of the all-binary body: (optimiser, lr, weight decay, clip latent weights to [-1, 1])
RECIPES = {
    "sgd": dict(optimizer="sgd", lr=0.05, weight_decay=5e-4, clip=False),       # lwdc's usual fine-tuning
    "adamw": dict(optimizer="adamw", lr=2e-3, weight_decay=0.0, clip=False),
    "adamw-clip": dict(optimizer="adamw", lr=2e-3, weight_decay=0.0, clip=True),
    "adamw-clip-lr5e-3": dict(optimizer="adamw", lr=5e-3, weight_decay=0.0, clip=True),
}
# LWDC operator sets of the rows lwdc-<key>:...: the named sets, and the same without skip (a flash budget under
# a short search otherwise removes layers rather than weighing one bit against fewer weights)
OPS = {"binary": "binary", "int8": "default",
       "binary-noskip": ["original", "bin3x3", "birealbin3x3", "conv3x3_g4", "conv1x1", "sep3x3"],
       "int8-noskip": ["original", "conv3x3_g2", "conv3x3_g4", "conv1x1", "sep3x3"]}
# the rows of bench/results/binary (the file lwdc-binary_flash-16KiB_gate-travel-10.json: the same row with
# --gate-travel 10, renamed)
ROWS = ("float", "binary:bin3x3:sgd", "binary:bin3x3:adamw", "binary:bin3x3:adamw-clip", "binary:bin3x3:adamw-clip-lr5e-3",
        "binary:birealbin3x3:adamw-clip", "lwdc-binary:flash=16KiB", "lwdc-int8:flash=16KiB",
        *(f"lwdc-{ops}-noskip:flash={b}KiB" for b in (16, 24, 32) for ops in ("binary", "int8")))
FLOAT_RECIPE = dict(optimizer="adamw", lr=3e-3, weight_decay=5e-4, clip=False)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} binary] {msg}", flush=True)


class Net(nn.Module):
    """conv0 (real) - pool - c1 - c2 - pool - c3 - c4 - pool - head (real 1x1) - global average."""

    def __init__(self, width: int = 32, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        w = width
        self.conv0, self.bn0 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        chans = {"c1": (w, w), "c2": (w, w), "c3": (w, 2 * w), "c4": (2 * w, 2 * w)}
        for name, (cin, cout) in chans.items():
            setattr(self, name, nn.Conv2d(cin, cout, 3, padding=1, bias=False))
            setattr(self, "bn" + name[1], nn.BatchNorm2d(cout))
        self.head = nn.Conv2d(2 * w, num_classes, 1)
        self.pool, self.relu = nn.MaxPool2d(2), nn.ReLU()

    def forward(self, x):
        x = self.pool(self.relu(self.bn0(self.conv0(x))))
        x = self.relu(self.bn1(self.c1(x)))
        x = self.pool(self.relu(self.bn2(self.c2(x))))
        x = self.relu(self.bn3(self.c3(x)))
        x = self.pool(self.relu(self.bn4(self.c4(x))))
        return self.head(x).mean(dim=(2, 3))


def binarize_body(model: Net, op: str) -> Net:
    """A copy with every body conv binary, started from its real weights (signs and magnitudes)."""
    out = copy.deepcopy(model)
    for name in BODY:
        conv = getattr(out, name)
        if op == "birealbin3x3" and conv.in_channels == conv.out_channels:
            new = BiRealBlock(conv.in_channels, 3, padding=1)
            new.conv.weight.data.copy_(conv.weight.data)
        else:
            new = BinaryConv2d(conv.in_channels, conv.out_channels, 3, padding=1)
            new.weight.data.copy_(conv.weight.data)
        setattr(out, name, new)
    # latent weights in [-1, 1]: rescale each layer so its largest |w| is 1 (the sign pattern is unchanged)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, BINARY_CONVS):
                m.weight.div_(m.weight.abs().max().clamp_min(1e-12))
    return out


def _optimizer(model: nn.Module, recipe: dict):
    binary = [p for m in model.modules() if isinstance(m, BINARY_CONVS) for p in m.parameters(recurse=False)]
    ids = {id(p) for p in binary}
    real = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": real, "weight_decay": recipe["weight_decay"]}]
    if binary:
        groups.append({"params": binary, "weight_decay": 0.0})    # decay pulls latent weights to 0: sign flips
    if recipe["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=recipe["lr"])


def evaluate(model: nn.Module, loader) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * right / total


def train(model: nn.Module, train_loader, test_loader, epochs: int, recipe: dict, ckpt: Path,
          max_batches: int | None = None) -> list[dict]:
    """Cosine-scheduled training, resumable per epoch from ``ckpt``; clips latent weights after each step if asked."""
    opt = _optimizer(model, recipe)
    steps = epochs * (max_batches or len(train_loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history, start = [], 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        history, start = state["history"], state["epoch"]
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        model.train()
        torch.manual_seed(1000 + epoch)
        for i, (x, y) in enumerate(train_loader):
            if max_batches and i >= max_batches:
                break
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if recipe["clip"]:
                clip_latent_weights(model)
        acc = evaluate(model, test_loader)
        history.append({"epoch": epoch + 1, "loss": float(loss.detach()), "accuracy": acc,
                        "seconds": round(time.perf_counter() - t0, 1)})
        _log(f"{ckpt.stem} epoch {epoch + 1}/{epochs}: loss {float(loss):.3f}, test {acc:.2f}%")
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "history": history, "epoch": epoch + 1}, tmp)
        tmp.replace(ckpt)
    return history


def measure(model: nn.Module, data, test_loader, calib: torch.Tensor, instructions: bool) -> dict:
    """Accuracy, MACs, params, flash (cost model and int8 export), peak RAM, int8 C accuracy, M4 instructions."""
    model = model.eval()
    example = calib[:1]
    row = {"accuracy": evaluate(model, test_loader), "params": count_params(model),
           "macs": count_macs(model, example), "flash_bytes_cost": flash_bytes(model, "int8", example),
           "flash_bytes_cost_float32": flash_bytes(model, "float32", example),
           "binary_layers": sum(isinstance(m, BINARY_CONVS) for m in model.modules())}
    xs = data.test.normalize(data.test.x)
    c = int8_c_figures(model, calib, xs, data.test.y)
    row.update({k: c[k] for k in ("flash_bytes", "peak_ram_bytes", "int8_c_accuracy", "int8_verified")})
    with tempfile.TemporaryDirectory(prefix="lwdc-bench-binary-") as tmp:
        if instructions and get_target("cortex-m4").can_run():
            t0 = time.perf_counter()
            m4 = export_c(model, example, Path(tmp) / "m4", int8=True, calib=calib, target="cortex-m4", log=None)
            counted = count_instructions(m4, xs[0])
            row.update(instructions_cortex_m4=counted["instructions"], instructions_seconds=round(time.perf_counter() - t0, 1),
                       flash_bytes_cortex_m4=m4.summary["flash_bytes"], peak_ram_bytes_cortex_m4=m4.summary["peak_ram_bytes"])
    return row


def _float_model(data, loaders, args) -> Net:
    torch.manual_seed(0)
    model = Net(num_classes=data.num_classes)
    train(model, loaders[0], loaders[1], args.epochs, FLOAT_RECIPE, CACHE / _tag(args) / "float.pt", args.max_batches)
    return model.eval()


def _tag(args) -> str:
    return "quick" if args.quick else f"e{args.epochs}"


def run_row(row: str, data, loaders, calib, args) -> dict:
    t0 = time.perf_counter()
    base = _float_model(data, loaders, args)
    cache = CACHE / _tag(args)
    out: dict = {"row": row}
    if row == "float":
        model = base
        out.update(kind="float", recipe=FLOAT_RECIPE, epochs=args.epochs,
                   history=torch.load(cache / "float.pt", weights_only=True)["history"])
    elif row.startswith("binary:"):
        _, op, recipe_name = row.split(":")
        recipe = RECIPES[recipe_name]
        model = binarize_body(base, op)
        epochs = args.bin_epochs
        history = train(model, loaders[0], loaders[1], epochs, recipe, cache / f"{op}-{recipe_name}.pt", args.max_batches)
        out.update(kind="binary", op=op, recipe={"name": recipe_name, **recipe}, epochs=epochs, history=history,
                   start="float weights, each layer's latent weights scaled to max |w| = 1")
    elif row.startswith("lwdc-"):
        ops_kind, point = row[len("lwdc-"):].split(":")
        cost, budget = point.split("=")
        ops = OPS[ops_kind]
        settings = dict(ops=ops, budgets={cost: budget}, warmup_epochs=args.warmup_epochs,
                        search_epochs=args.search_epochs, finetune_epochs=args.finetune_epochs,
                        lr=args.search_lr, finetune_lr=args.finetune_lr, optimizer=args.optimizer, weight_decay=0.0,
                        gate_travel=args.gate_travel, gate_optimizer="shared-adam", budget_ramp=0.5,
                        budget_signal=LEGACY_DEFAULTS["budget_signal"], progress=False,   # its rows' law
                        max_batches=args.max_batches, seed=args.seed)
        # "trainer" 2: lwdc.train clips latent weights and the flash cost prices a skip's BatchNorm (older run
        # folders trained without either and are not resumed)
        folder = (row.replace(":", "_").replace("=", "-") + "-"
                  + config_fingerprint({**settings, "trainer": 2})[:8])
        result = compress(base, loaders[0], loaders[1], run_dir=cache / folder,
                          summary=False, log=_log, **settings)
        model = result.model
        rep = result.report
        out.update(kind="lwdc", ops=ops, budget={cost: budget}, seed=args.seed, trainer=2,
                   settings={k: v for k, v in settings.items()},
                   choices=result.choices, run_dir=str(cache / folder),
                   wall_time_s=rep.get("wall_time_s"))
    else:
        raise SystemExit(f"unknown row {row!r}")
    out.update(measure(model, data, loaders[1], calib, not args.no_instructions))
    out.update(quick=args.quick, wall_seconds=round(time.perf_counter() - t0, 1), machine=machine_info(),
               git=git_info(), data="cifar10-subset (5,000 train / 1,000 test)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=8, help="float baseline epochs")
    parser.add_argument("--bin-epochs", type=int, default=8, help="all-binary-body training epochs")
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--gate-travel", type=float, default=None,
                        help="CompressConfig.gate_travel (10 drove every gate to skip in 3 epochs here)")
    parser.add_argument("--search-lr", type=float, default=1e-3, help="weights' lr in the search (AdamW)")
    parser.add_argument("--finetune-lr", type=float, default=2e-3)
    parser.add_argument("--optimizer", default="adamw", help="LWDC search/fine-tune optimiser")
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--no-instructions", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 epoch of 3 batches everywhere")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--seed", type=int, default=0, help="LWDC rows: the search's seed (files and folders of "
                        "seeds other than 0 end in _sN)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.epochs = args.bin_epochs = args.search_epochs = args.finetune_epochs = 1
        args.warmup_epochs, args.max_batches = 0.1, 3
    data = load_data("cifar10-subset")
    loaders = (BatchLoader(data.train, 128, shuffle=True, augment=random_crop_flip(4), drop_last=True),
               BatchLoader(data.test, 256))
    g = torch.Generator().manual_seed(0)
    calib = data.train.normalize(data.train.x[torch.randperm(len(data.train), generator=g)[:256]])
    for row in args.rows:
        name = (("quick-" if args.quick else "") + row.replace(":", "_").replace("=", "-")
                + (f"_s{args.seed}" if args.seed and row.startswith("lwdc-") else "") + ".json")
        path = args.out / name
        if path.exists() and not args.force:
            _log(f"{row}: {path} exists, skipped")
            continue
        result = run_row(row, data, loaders, calib, args)
        write_json(path, result)
        _log(f"{row}: accuracy {result['accuracy']:.2f}%, int8 C {result['int8_c_accuracy']:.2f}%, "
             f"flash {result['flash_bytes']:,} B, peak RAM {result['peak_ram_bytes']:,} B, "
             f"M4 instructions {result.get('instructions_cortex_m4', '-')}; wrote {path}")


# ----------------------------------------------------------------------------------------------- RESULTS.md

def load(results: Path) -> list[dict]:
    rows = []
    for f in sorted((results / "binary").glob("*.json")):
        r = json.loads(f.read_text())
        if "row" in r and not r.get("quick"):
            rows.append(r)
    return rows


def _order(r: dict) -> tuple:
    ops = r.get("ops", "")
    return ({"float": 0, "binary": 1, "lwdc": 2}.get(r["kind"], 3), "bin" not in str(ops), r.get("flash_bytes", 0))


def section(results: Path) -> str:
    rows = load(Path(results))
    if not rows:
        return ""
    head = ["model", "accuracy (%)", "int8 C accuracy (%)", "int8 flash (B)", "int8 peak RAM (B)", "MACs",
            "Cortex-M4 instructions", "body operators"]
    lines = ["### Binary operators: accuracy, flash, RAM, instructions (issue 19)", "",
             "CIFAR-10 subset (5,000 / 1,000 images), one 5-conv CNN (width 32) in every row "
             "(`python -m bench.binary`); flash and peak RAM of the int8 C export, instructions of one inference on "
             "QEMU's Cortex-M4; binary MACs = BOPs / 64.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=_order):
        if r["kind"] == "float":
            label, ops = f"float32 ({r['epochs']} epochs) / its int8 export", "real"
        elif r["kind"] == "binary":
            label = f"all-binary body {r['op']} ({r['recipe']['name']}, {r['epochs']} epochs)"
            ops = f"{r['binary_layers']} binary"
        else:
            kind = r["row"].split(":")[0][len("lwdc-"):]
            name = {"binary": "set `binary`", "int8": "set `default` (int8 only)",
                    "binary-noskip": "`binary` without skip", "int8-noskip": "`default` without skip (int8 only)"}[kind]
            travel = r["settings"].get("gate_travel")
            label = (f"LWDC, {name}, flash <= {list(r['budget'].values())[0]}"
                     + (f", gate_travel {travel:g}" if travel else "") + f", seed {r.get('seed', 0)}"
                     + ("" if r.get("trainer") else " (before latent-weight clipping)"))
            ops = ", ".join(f"{k}: {v}" for k, v in r["choices"].items() if k in BODY)
        instr = r.get("instructions_cortex_m4")
        cells = [label, f"{r['accuracy']:.2f}", f"{r['int8_c_accuracy']:.2f}", f"{r['flash_bytes']:,}",
                 f"{r['peak_ram_bytes']:,}", f"{r['macs']:,}", f"{instr:,}" if instr else "-", ops]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
