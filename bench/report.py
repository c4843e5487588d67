"""Turn every CIFAR benchmark result into tables in docs/RESULTS.md and a Pareto plot per model and schedule.

    python -m bench.report [--results bench/results/cifar] [--doc docs/RESULTS.md]

Only the region between the markers below is rewritten; the rest of the file belongs to other authors (the plots
go beside ``--doc``, so ``--doc /tmp/x/RESULTS.md`` writes nothing under docs/). Published figures are quoted in
their own table, labelled, never mixed with ours. Runs of several seeds are shown as mean (seed 0 / seed 1);
batch-1 latencies re-measured by ``python -m bench.remeasure`` (``bench/results/latency_<schedule>.json``) replace
the in-run ones; a schedule with latency-cost LWDC runs gets a second plot, accuracy against onnxruntime latency.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from .configs import EXPERIMENTS, operator_sets
from .report_compare import best_matches, best_pruning, matched_pairs, matched_table, nearest_pruning  # noqa: F401 (API)
from . import binary, c_speed, mcu_kernels, report_landmarks, report_share, report_signals, report_targets
from .report_format import fmt, machine_label, noise_label, point, same_budget, series  # noqa: F401 (API)
from .report_latency import apply_remeasured, front, latency_fronts, remeasured_note
from .report_layers import layer_lines, load_layers
from .report_random import ablation_lines, random_lines
from .report_seeds import cell, merge_seeds, seeds_of

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:cifar:start -->", "<!-- bench:cifar:end -->"
SERIES = ("baseline", "baseline-extended", "lwdc-default", "lwdc-default-noise0.25", "lwdc-paper", "prune-l1-global",
          "prune-l1", "prune-group-sparse")

PUBLISHED = """### Published CIFAR-10 figures (quoted, not measured here)

Other papers' numbers, from their own training schedules (usually 160-300 epochs on a GPU) and the original
CIFAR-10; they are not comparable one-to-one with the reduced-schedule results above.

| model | method | baseline acc. (%) | compressed acc. (%) | MACs reduction | params | source |
|---|---|---|---|---|---|---|
| ResNet-56 | Torch-Pruning, group L1 ("Group-L1") | 93.53 | 92.93 | 2.12x | - | [1] |
| ResNet-56 | DepGraph with sparse learning ("Ours") | 93.53 | 93.77 | 2.13x | - | [1] |
| ResNet-56 | DepGraph with sparse learning ("Ours") | 93.53 | 93.64 | 2.57x | - | [1] |
| ResNet-56 | HRank | 93.26 [1] | 93.17 | 62.72M FLOPs (50.0% fewer) | 0.49M (42.4% fewer) | [2] |
| VGG-16 | HRank | - | 92.34 | 108.61M FLOPs (65.3% fewer) | 2.64M (82.1% fewer) | [2] |

[1] Torch-Pruning benchmark table, ResNet-56 / CIFAR-10 (Fang et al., "DepGraph: Towards Any Structural Pruning",
CVPR 2023), https://github.com/VainF/Torch-Pruning/tree/master/benchmarks (the table has changed between
versions of that page; these rows are from the version listing "Group-L1" and two "Ours" rows); speed-up there is
base MACs / pruned MACs. [2] HRank repository README (Lin et al., "HRank: Filter Pruning using High-Rank
Feature Map", CVPR 2020), https://github.com/lmbxmu/HRank; its authors note that the pruning rates in the paper
under-count removed channels.

Not obtained: the tables of the LWDC paper (Diao et al., "Implementation of Lightweight Convolutional Neural
Networks via Layer-Wise Differentiable Compression", Sensors 21(10):3464, 2021, doi:10.3390/s21103464). Only its
abstract and section outline could be reached from this workspace, so none of its figures are quoted. No
published ResNet-20 figure for these methods was found either. Note also that lwdc's CIFAR ResNets use 1x1
projection shortcuts where the shape changes (ResNet-20: 272,474 parameters, 40.8 M MACs), while most of the
papers above use the parameter-free "option A" shortcut.
"""


def load_results(folder: Path) -> list[dict]:
    """Every result, with its file name (``_file``) by which bench.remeasure's figures find it."""
    return [{**json.loads(p.read_text()), "_file": p.stem} for p in sorted(Path(folder).glob("*.json"))]


def results_table(rs: list[dict], reference: dict | None) -> list[str]:
    ref = reference["accuracy"] if reference else None
    lines = ["| method | point | acc. (%) | Δ vs extended | params | MACs (M) | MACs ratio | eager b1 (ms) | "
             "eager b64 (ms) | ORT b1 (ms) | speed ratio b1 / b64 / ORT | training (min) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate(SERIES)}
    for r in sorted(rs, key=lambda r: (order.get(series(r), 99), r.get("lambda") or 0, r["macs"])):
        lat, sr = r["latency_ms"], r.get("speed_ratio", {})
        speed = " / ".join(fmt(sr.get(k)) for k in ("eager_b1", "eager_b64", "ort_b1"))
        lines.append(
            f"| {series(r)} | {point(r)} | {cell(r, 'accuracy')} | "
            f"{fmt(None if ref is None else r['accuracy'] - ref, '+.2f')} | "
            f"{r['params']:,} | {r['macs'] / 1e6:.2f} | {cell(r, 'macs_ratio', '.3f')} | {fmt(lat.get('eager_b1'))} | "
            f"{fmt(lat.get('eager_b64'), '.1f')} | {fmt(lat.get('ort_b1'), '.3f')} | {speed} | "
            f"{r.get('train_seconds', r['wall_time_total_s']) / 60:.1f} |")
    return lines


def searched_here(r: dict) -> bool:
    """Whether the process that wrote an LWDC result ran (part of) its search. A run resumed after its search had
    finished, or started from another schedule's search (``search_reused_from``), loads the search checkpoint in
    well under a second (``wall_time_s`` counts this process only); its peak memory is then the fine-tuning's."""
    return r["wall_time_s"]["search"] >= 1.0


def cost_table(rs: list[dict], plain: dict | None) -> list[str]:
    """Search epoch time and peak memory against ``plain``: a run that trained the original model for whole
    epochs in its own process (baseline-extended where finished: it runs beside the LWDC runs of its schedule)."""
    lines = ["| LWDC point | search epoch (s) | plain epoch (s) | time ratio | peak RSS (MB) | "
             "plain peak RSS (MB) | peak RSS ratio | RSS growth ratio | warm-up / search / fine-tune (min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    p_mem = plain["memory"] if plain else None
    p_epoch = plain.get("epoch_seconds") if plain else None
    growth = lambda mem: mem["peak_rss_mb"] - mem["rss_before_training_mb"]  # noqa: E731
    searches = (r for r in rs if r["method"] == "lwdc" and same_budget(r))
    for r in sorted(searches, key=lambda r: (r["ops"], r["lambda"])):
        m, w = r["memory"], r["wall_time_s"]
        if not searched_here(r):    # this process only fine-tuned: its memory says nothing of the search
            where = f"`{r['search_reused_from']}`" if r.get("search_reused_from") else "an earlier process"
            lines.append(f"| {point(r)} | {r['search_epoch_seconds']:.0f} | {fmt(p_epoch, '.0f')} | "
                         f"{fmt(p_epoch and r['search_epoch_seconds'] / p_epoch)} | - | - | - | - | "
                         f"search in {where} / {w['finetune'] / 60:.1f} |")
            continue
        lines.append(
            f"| {point(r)} | {r['search_epoch_seconds']:.0f} | {fmt(p_epoch, '.0f')} | "
            f"{fmt(p_epoch and r['search_epoch_seconds'] / p_epoch)} | "
            f"{m['peak_rss_mb']:.0f} | {fmt(p_mem and p_mem['peak_rss_mb'], '.0f')} | "
            f"{fmt(p_mem and m['peak_rss_mb'] / p_mem['peak_rss_mb'])} | {fmt(p_mem and growth(m) / growth(p_mem))} | "
            f"{w['warmup'] / 60:.1f} / {w['search'] / 60:.1f} / {w['finetune'] / 60:.1f} |")
    return lines


def controlled_cost(model: str) -> list[str]:
    """The alternating, one-process-per-variant step measurement of bench/search_cost.py, where it exists."""
    path = Path(__file__).parent / "results" / "search_cost.json"
    if not path.exists():
        return []
    sc = json.loads(path.read_text())
    if sc.get("model") != model or "search" not in sc.get("ratios", {}):
        return []
    r = sc["ratios"]["search"]
    return [f"Controlled measurement (`python -m bench.search_cost`, batch {sc['batch_size']}, ops `{sc['ops']}`, "
            f"{sc['threads']} threads, variants alternating over {sc['rounds']} rounds): a search step takes "
            f"{r['time']:.2f}x the time of a plain training step, with {r['peak_rss']:.2f}x the peak RSS "
            f"({r['saved_for_backward']:.2f}x the tensors saved for backward).", ""]


def time_change(ratio: float) -> str:
    """'12% less time', '3% MORE time', or 'the same time' where the change rounds to 0% (not '0% MORE time')."""
    if round(abs(1 - ratio) * 100) == 0:
        return "the same time"
    return f"{(1 - ratio) * 100:.0f}% less time" if ratio < 1 else f"{(ratio - 1) * 100:.0f}% MORE time"


def checks(rs: list[dict], reference: dict | None, verdicts: list[str]) -> list[str]:
    out = []
    if reference is None:
        out.append("- Same-schedule baseline (baseline-extended) not finished yet: the accuracy criterion cannot be "
                   "checked.")
    else:
        good = [r for r in rs if r["method"] == "lwdc" and same_budget(r) and r["macs_ratio"] <= 0.5
                and r["accuracy"] >= reference["accuracy"] - 1.0]
        half = [r for r in rs if r["method"] == "lwdc" and same_budget(r) and r["macs_ratio"] <= 0.5]
        if good:
            out.append("- LWDC points with >= 50% fewer MACs within 1.0 point of the same-schedule baseline "
                       f"({reference['accuracy']:.2f}%): " + ", ".join(
                           f"{point(r)} ({cell(r, 'accuracy')}%, MACs {r['macs_ratio']:.3f}x)" for r in good) + ".")
        else:
            out.append(f"- No LWDC point reaches >= 50% fewer MACs within 1.0 point of the same-schedule baseline "
                       f"({reference['accuracy']:.2f}%)" + (": " + ", ".join(
                           f"{point(r)} {cell(r, 'accuracy')}% at {r['macs_ratio']:.3f}x" for r in half) if half
                           else "; no finished point has >= 50% fewer MACs") + ".")
    out += [f"- {v}." for v in verdicts] or ["- No matched pruning comparison has finished yet."]
    for r in rs:
        sr = r.get("speed_ratio") or {}
        if r["macs_ratio"] < 0.99 and sr:
            out.append(f"- {series(r)} {point(r)}: {(1 - r['macs_ratio']) * 100:.0f}% fewer MACs gave "
                       + ", ".join(f"{time_change(r['latency_ms'][k] / r['baseline_latency_ms'][k])} in {label}"
                                   for k, label in (("eager_b1", "eager batch 1"), ("eager_b64", "eager batch 64"),
                                                    ("ort_b1", "onnxruntime batch 1")) if k in r["latency_ms"])
                       + ".")
    return out


def pending(model: str, schedule: str, rs: list[dict]) -> list[str]:
    """Runs of the queue's plan for ``model`` that have no result yet, for every seed some run of ``rs`` has (each
    named with its seed where there are several)."""
    from lwdc.api import CompressConfig

    from .context import run_name
    from .queue import plan

    noise_end = CompressConfig.noise_end       # what bench.cifar runs by default

    def name(r: dict) -> str:
        if r.get("run"):
            return r["run"]
        if r.get("matches"):
            return f"{r['method']}-{r['matches'].removeprefix('lwdc-')}"
        return run_name(r["method"], r.get("lambda"), r.get("ops") or "default", r.get("target"))

    done = {(name(r), r["seed"]) for r in rs}
    seeds = sorted({r["seed"] for r in rs})
    todo = []
    jobs = plan(model, list(operator_sets(model, schedule)), schedule, seeds=seeds) if model in EXPERIMENTS else []
    for job in jobs:
        opts = dict(zip(job[::2], job[1::2]))
        lam = float(opts["--lam"]) if "--lam" in opts else None
        job_name = run_name(opts["--method"], lam, opts.get("--ops", "default"), None, noise_end=noise_end,
                            cost=opts.get("--cost", "macs"))
        seed = int(opts.get("--seed", 0))
        if (job_name, seed) not in done:
            todo.append(job_name if len(seeds) == 1 else f"{job_name} (seed {seed})")
    return todo


def pareto_plot(rs: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, 5.2))
    groups = defaultdict(list)
    for r in rs:
        groups[series(r)].append(r)
    markers = dict(zip(SERIES, "s*oPvD^X"))
    for name in [s for s in SERIES if s in groups] + [s for s in groups if s not in SERIES]:
        pts = groups[name]
        if name == "random":            # draws are not a sweep: faint dots, no line
            ax.plot([2 * r["macs"] / 1e6 for r in pts], [r["accuracy"] for r in pts], marker=".", color="black",
                    alpha=0.45, linestyle="none", label="random draws", markersize=6)
            continue
        line = ax.plot([2 * r["macs"] / 1e6 for r in pts], [r["accuracy"] for r in pts], linestyle="none",
                       marker=markers.get(name, "x"), label=name, markersize=8)[0]
        edge = front([(r["macs"], r["accuracy"], r) for r in pts])     # the line joins the series' Pareto front
        if len(edge) > 1:
            ax.plot([2 * m / 1e6 for m, _, _ in edge], [a for _, a, _ in edge], color=line.get_color(), alpha=0.7)
    ax.set_xlabel("FLOPs per image (M, = 2 x MACs); lines join each series' Pareto front")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: never hides a point
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")       # widened to hold the legend and the title
    plt.close(fig)


def section(results: list[dict], doc: Path, latency_dir: Path | None = None) -> str:
    """The generated region; ``latency_dir`` holds bench.remeasure's ``latency_<schedule>.json`` and bench.layer_macs's
    ``layers_<schedule>.json`` files, if any."""
    groups = defaultdict(list)
    for r in results:
        groups[(r["model"], r["schedule"], r.get("max_batches"))].append(r)
    out = ["## CIFAR-10: LWDC against structured pruning (measured here)", "",
           "Generated by `python -m bench.report` from `bench/results/cifar/*.json` (one file per run, written by "
           "`python -m bench.cifar`; `python -m bench.queue --model resnet20` runs or resumes them all). Every "
           "method starts from the same cached baseline (same data, seed and augmentation) and then gets the same "
           "post-baseline budget: LWDC spends it as warm-up + search + fine-tune; `baseline-extended` trains the "
           "original model on for as many epochs (rounded up), and is the *same-schedule baseline* all accuracy "
           "differences refer to; Torch-Pruning 1.6.1 prunes filters by L1 magnitude through its dependency graph, "
           "once, at the MACs of an LWDC point (bisection on the pruning ratio; `prune-l1`: the same ratio in every "
           "layer group, `prune-l1-global`: ranked across the network), then fine-tunes for the same epochs. "
           "Training and fine-tuning: SGD Nesterov, weight decay 5e-4, cosine decay per step, batch 128, random "
           "crop + flip. Data: full CIFAR-10 (50,000 / 10,000) from the JPEG re-encoding in "
           "`../shared/data/cifar10-jpeg.tar.gz`.", "",
           "Columns: *speed ratio* = measured latency reduction / MACs reduction (1: the MACs saving became time "
           "saving in full; 0: none; negative: slower). *Training*: minutes of the run's own training (for all but "
           "the baseline: after the baseline), summed over epochs, so resumed runs count fully. Latency is the "
           "median of repeated runs on one thread, original and compressed model alternating in the same process, "
           "in PyTorch eager (batch 1 and 64) and onnxruntime (batch 1). The CPU was shared with other jobs, so "
           "single latencies are noisy; the ratios, taken in the same process, less so. Search cost: median search "
           "epoch over the median epoch of plain training of the original model (`baseline-extended` where it has "
           "finished, else the baseline; both including evaluation), and peak resident memory (VmHWM of each run's "
           "process, read right after training; it includes ~0.2 GB of data held in memory, so the growth over the "
           "pre-training RSS is given too).", ""]
    def order(kv):
        (model, schedule, mb), rs = kv
        return str((model, schedule, min(r["seed"] for r in rs), mb))

    for (model, schedule, mb), runs in sorted(groups.items(), key=order):
        seeds = sorted({r["seed"] for r in runs})
        measured, latency_data = apply_remeasured(runs, latency_dir / f"latency_{schedule}.json") if latency_dir \
            else (runs, None)
        rs = merge_seeds(measured)
        s = rs[0]["schedule_settings"]
        tag = f"{model}_{schedule}" + (f"_mb{mb}" if mb else "")
        base = next((r for r in rs if r["method"] == "baseline"), None)
        reference = next((r for r in rs if r["method"] == "baseline-extended"), None)
        commits = sorted({(r["git"]["commit"][:10], r["git"]["dirty"]) for r in runs})
        machines = sorted({machine_label(r["machine"]) for r in runs})
        out += [f"### {model}, schedule `{schedule}`, seed{'s' if len(seeds) > 1 else ''} "
                + ", ".join(map(str, seeds)) + (f" (capped at {mb} batches/epoch)" if mb else ""), "",
                f"Schedule: baseline {s['baseline_epochs']} epochs (lr {s['lr']}); LWDC warm-up {s['warmup_epochs']} + "
                f"search {s['search_epochs']} (lr {s['search_lr']}) + fine-tune {s['finetune_epochs']} (lr "
                f"{s['finetune_lr']}) epochs; baseline-extended and pruning: {s['post_epochs']} epochs from lr "
                f"{s['search_lr']}. Machine{'s' if len(machines) > 1 else ''}: {'; '.join(machines)}. Code: "
                + ", ".join(f"`{c}`{' + uncommitted changes' if d else ''}" for c, d in commits) + ".", ""]
        out += group_sparse_note(rs) + seeds_note(rs)
        out += results_table(rs, reference) + [""] + remeasured_note(measured, latency_data)
        plot = doc.parent / f"pareto_{tag}.png"
        pareto_plot(rs, plot, f"{model}, CIFAR-10, schedule {schedule}: accuracy vs FLOPs")
        out += [f"![accuracy vs FLOPs, {model}]({plot.name})", ""]
        out += latency_fronts(rs, doc.parent / f"latency_{tag}.png",
                              f"{model}, CIFAR-10, schedule {schedule}: accuracy vs onnxruntime latency", point)
        out += random_lines(measured) + ablation_lines(measured)
        matched, verdicts = matched_table(rs)
        if len(matched) > 2:
            out += ["Matched MACs:", ""] + matched + [""] + best_pruning(rs)
            if latency_dir:
                out += layer_lines(best_matches(rs), load_layers(latency_dir / f"layers_{schedule}.json"))
        plain = reference or base
        if any(r["method"] == "lwdc" for r in rs) and plain is None:
            out += ["Search cost: no plain training of the original model (baseline or baseline-extended) has "
                    "finished in this schedule yet.", ""]
        elif any(r["method"] == "lwdc" for r in rs):
            out += [f"Search cost (LWDC run against plain training of the original model, `{plain['method']}`; "
                    "epochs run at different times on a shared CPU, so the time ratio carries load differences "
                    "too):", ""]
            out += cost_table(rs, plain) + [""] + controlled_cost(model)
        out += ["What the numbers say:", ""] + checks(rs, reference, verdicts) + [""]
        if base:
            out += [f"Baseline: {base['accuracy']:.2f}% after {s['baseline_epochs']} epochs "
                    f"(median epoch {fmt(base.get('epoch_seconds'), '.0f')} s).", ""]
        missing = pending(model, schedule, runs)
        if missing and not mb:
            out += [f"Not run yet with today's defaults (`python -m bench.queue --model {model} --schedule {schedule}` "
                    "runs or resumes them; runs above without `-noise` predate the noise schedule): "
                    + ", ".join(f"`{m}`" for m in missing) + ".", ""]
    out += [PUBLISHED]
    return "\n".join(out)


def group_sparse_note(rs: list[dict]) -> list[str]:
    """How prune-group-sparse spent its budget, where it ran (its settings are newer than the section's text)."""
    r = next((r for r in rs if r["method"] == "prune-group-sparse"), None)
    if r is None:
        return []
    s = r["schedule_settings"]
    return [f"`prune-group-sparse` is Torch-Pruning's DepGraph configuration: {s['sparse_epochs']} epochs of sparse "
            f"training from the baseline (its group regulariser, coefficient {r['sparse_reg']:g}, instead of weight "
            f"decay), global pruning by group L2 norm to the MACs of the LWDC point, then "
            f"{s['post_epochs'] - s['sparse_epochs']} epochs of fine-tuning; both stages from lr {s['search_lr']}.",
            ""]


def seeds_note(rs: list[dict]) -> list[str]:
    several = [r for r in rs if "seed_runs" in r]
    if not several:
        return []
    bases = sorted({x.get("baseline_seed", x["seed"]) for r in several for x in r["seed_runs"]})
    return [f"{len(several)} run(s) finished under several seeds: their cells read mean (seed "
            + " / seed ".join(map(str, seeds_of(several[0]))) + "), and the comparisons use the means. Every seed "
            f"starts from the baseline of seed {', '.join(map(str, bases))}; the seed changes the data order, the "
            "augmentation and the method's own random draws.", ""]


def write_region(doc: Path, body: str, start: str = START, end: str = END) -> None:
    """Replace the text between the markers (create the file, or append the markers, when absent)."""
    text = doc.read_text() if doc.exists() else "# Results\n\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(Path(__file__).parent / "results" / "cifar"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "RESULTS.md"))
    a = p.parse_args(argv)
    results = load_results(Path(a.results))
    doc = Path(a.doc)
    write_region(doc, section(results, doc, Path(a.results).parent))
    targets = report_targets.section(Path(a.results).parent)
    if targets:
        write_region(doc, targets, *report_targets.MARKERS)
    for module in (report_signals, report_share, mcu_kernels, c_speed, report_landmarks, binary):
        body = module.section(Path(a.results).parent)
        if body:
            write_region(doc, body, *module.MARKERS)
    print(f"{len(results)} results -> {doc}")


if __name__ == "__main__":
    main()
