"""One self-contained HTML page about a finished run: architecture before/after, how the gates chose, the
accuracy/cost trade-off across runs, saliency and representation similarity of original vs compressed.

``compare_models`` runs the model-level analyses on any pair of plain models (it is the Python API behind the
report's last two sections); ``build_report`` reads a run folder, calls it and writes ``report.html`` (every
image embedded as a data URI, inline CSS, no script, nothing fetched) beside the same figures as PNG files.
"""
from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from . import plots
from ..runs import Run, RunError
from ..summary import changed_nothing
from .compare import Comparison, compare_models
from .detection import detection_section, signal_saliency_section
from .markup import fmt as _fmt, img as _img, table as _table

__all__ = ["ReportError", "build_report", "find_runs"]


class ReportError(ValueError):
    """A folder that is not a finished run, or inputs a report cannot use."""


# ---------------------------------------------------------------- the run folder

def _read_run(run_dir: Path) -> dict:
    try:
        run = Run.open_finished(run_dir)       # folders of lwdc compress and of the Python API alike
    except RunError as exc:
        raise ReportError(str(exc)) from None
    try:
        report = run.report()
    except RunError as exc:
        raise ReportError(str(exc)) from None
    missing = [k for k in ("before", "after", "choices") if k not in report]
    if missing:
        raise ReportError(f"{run_dir / 'report.json'} lacks {', '.join(missing)}: not written by lwdc compress")
    report.setdefault("layers", [])
    report.setdefault("lambda", None)
    return report


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders: each path is one (it holds report.json) or a results folder searched for them."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ReportError(f"--runs {path}: no such folder")
        hits = [path] if Run(path).finished else sorted(p.parent for p in path.rglob(Run.REPORT))
        if not hits:
            raise ReportError(f"--runs {path}: no finished run (report.json) in it or below it")
        found += hits
    return found


def _load_models(run_dir: Path, notes: list[str]) -> tuple[nn.Module | None, nn.Module | None]:
    """The original and the compressed model, rebuilt from the run folder's safe artefacts (no code runs)."""
    run, models = Run(run_dir), []
    for name in ("original", "model"):
        try:
            models.append(run.load_model(name))
        except RunError as exc:
            notes.append(f"the {'compressed' if name == 'model' else 'original'} model cannot be loaded ({exc}); "
                         "saliency and similarity were skipped")
            models.append(None)
    return models[0], models[1]


def _pick(dataset, n: int, seed: int, by_class: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised samples: a seeded random choice, or the first sample of each class in turn."""
    n = min(n, len(dataset))
    if by_class:
        idx, seen = [], set()
        for i, label in enumerate(dataset.y.tolist()):
            if label not in seen:
                seen.add(label)
                idx.append(i)
            if len(idx) == n:
                break
        idx += [i for i in range(len(dataset)) if i not in idx][: n - len(idx)]
        idx = torch.tensor(idx)
    else:
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return dataset.normalize(dataset.x[idx]), dataset.targets(idx)


# ---------------------------------------------------------------- HTML

CSS = """body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1120px;margin:0 auto;
padding:16px 24px;color:#1d2330}h1{font-size:24px;margin-bottom:2px}h2{margin-top:34px;border-bottom:2px solid
#dfe3ea;padding-bottom:4px}.sub{color:#5b6475}table{border-collapse:collapse;margin:10px 0;font-size:13px}
td,th{border:1px solid #d6dbe3;padding:3px 8px;text-align:right}th{background:#f1f4f8}td.l,th.l{text-align:left}
tr.changed td.op{background:#fff4d6;font-weight:600}tr.current td{background:#eef6ff}img{max-width:100%;
border:1px solid #e6e9ef;margin:6px 0}.note{background:#fff8e1;border-left:4px solid #f0b429;padding:6px 12px;
margin:8px 0}.probs{color:#5b6475;font-size:11.5px}nav a{margin-right:14px}code{background:#f1f4f8;padding:0 3px}"""


def _ratio(before: float, after: float) -> str:
    return f"{after / before:.3f}x" if before else "-"


def _summary(report: dict, run_dir: Path, notes: list[str]) -> str:
    b, a, metric = report["before"], report["after"], report.get("primary_metric", "accuracy")
    rows = [["parameters", _fmt(b["params"]), _fmt(a["params"]), _ratio(b["params"], a["params"])],
            ["MACs (FLOPs)", _fmt(b["macs"]), _fmt(a["macs"]), _ratio(b["macs"], a["macs"])]]
    latency = report.get("latency") or {}
    paired = {k: v for k, v in latency.get("backends", {}).items() if "ratio" in v}
    for name, t in paired.items():          # one paired measurement: median of per-round ratios, their range
        lo, hi = t.get("ratio_interval", t["ratio_range"])
        rows.append([f"latency {name}, batch {latency.get('batch_size', 1)} (ms)", _fmt(t["a_ms"], 3),
                     _fmt(t["b_ms"], 3),
                     f"{t['ratio']:.3f}x [{lo:.3f}–{hi:.3f}]" + (" ~" if t["within_noise"] else "")])
    if not paired and "latency_ms" in b:
        rows.append(["latency, batch 1 (ms)", _fmt(b["latency_ms"], 3), _fmt(a["latency_ms"], 3),
                     _ratio(b["latency_ms"], a["latency_ms"]) + " (single timings, not paired)"])
    if metric in b and metric in a:
        rows.append([f"{metric} (%)", _fmt(b[metric]), _fmt(a[metric]), f"{a[metric] - b[metric]:+.2f}"])
    cfg = report.get("config", {})
    ops = cfg.get("ops", "?")
    counts: dict[str, int] = {}
    for op in report["choices"].values():
        counts[op] = counts.get(op, 0) + 1
    wall = report.get("wall_time_s", {}).get("total")
    share = report.get("share")
    if share:
        shared = sum(1 for r in share["layers"] if r["codebook"])
        parts = [f"<p>Method <code>share</code>: {shared} of {len(share['layers'])} layers share a codebook, the "
                 f"weights take {share['compression']:.1f}x fewer bits; {cfg.get('finetune_epochs', '?')} fine-tuning "
                 "epochs" + (f", {wall / 60:.1f} min in all" if wall else "") + ".</p>",
                 _table(["", "before", "after", "ratio"], rows)]
        parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
        return "".join(parts)
    parts = [f"<p>λ = {report['lambda']:g}, cost <code>{html.escape(str(report.get('cost')))}</code>, operators "
             f"<code>{html.escape(ops if isinstance(ops, str) else ','.join(ops))}</code>, "
             f"{cfg.get('search_epochs', '?')} search + {cfg.get('finetune_epochs', '?')} fine-tuning epochs"
             + (f", {wall / 60:.1f} min in all" if wall else "") + ". Chosen: "
             + ", ".join(f"{html.escape(op)} ×{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))
             + ".</p>", _table(["", "before", "after", "ratio"], rows)]
    if paired:
        rounds = next(iter(paired.values()))["rounds"]
        noisy = [name for name, t in paired.items() if t["within_noise"]]
        parts.append(f"<p>Latency: original and compressed model alternating in one process over {rounds} rounds, "
                     f"{latency.get('threads', 1)} thread(s); the ratio is the median of the per-round ratios, in "
                     "brackets its distribution-free "
                     + (f"{100 * next(iter(paired.values()))['interval_confidence']:.0f}% "
                        if "interval_confidence" in next(iter(paired.values())) else "") + "interval."
                     + (f" ~ ({', '.join(noisy)}): the interval contains 1, the rounds do not agree on which model is "
                        "faster: the spread is larger than the difference and no change was measured." if noisy
                        else "") + "</p>")
    if changed_nothing(report):
        parts.append('<p class="note">Nothing was compressed: every layer kept its original operator, so the '
                     "result is the original architecture, fine-tuned (raise λ, give a target or search longer)."
                     "</p>")
    if report.get("skipped"):
        parts.append("<p>Left as they were: " + "; ".join(f"<code>{html.escape(s['name'])}</code> "
                     f"({html.escape(s['reason'])})" for s in report["skipped"]) + ".</p>")
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    return "".join(parts)


def _architecture(report: dict, colours: dict) -> tuple[str, dict[str, bytes]]:
    rows, classes = [], []
    for r in report["layers"]:
        probs = " · ".join(f"{op} {p:.2f}" for op, p in sorted(zip(r["candidates"], r["probabilities"]),
                                                                key=lambda t: -t[1]))
        rows.append([f"<code>{html.escape(r['name'])}</code>", html.escape(r["original"]), html.escape(r["chosen"]),
                     _fmt(r["params_before"]), _fmt(r["params_after"]), _fmt(r["macs_before"]),
                     _fmt(r["macs_after"]), f'<span class="probs">{html.escape(probs)}</span>'])
        classes.append("changed" if r["chosen"] != "original" else "")
    totals = {k: sum(r[k] for r in report["layers"]) for k in ("params_before", "params_after", "macs_before",
                                                                "macs_after")}
    b, a = report["before"], report["after"]
    rows.append(["other layers", "norms, shortcuts, classifier…", "kept", _fmt(b["params"] - totals["params_before"]),
                 _fmt(a["params"] - totals["params_after"]), _fmt(b["macs"] - totals["macs_before"]),
                 _fmt(a["macs"] - totals["macs_after"]), ""])
    rows.append(["<b>model</b>", "", "", _fmt(b["params"]), _fmt(a["params"]), _fmt(b["macs"]), _fmt(a["macs"]), ""])
    png = plots.layer_costs(report["layers"], colours)
    text = ("<p>One row per searched layer: the operator it had, the one the gate chose (highlighted where it "
            "changed), parameters and MACs (FLOPs in the CIFAR literature's sense: multiply-accumulates) before and "
            "after, and the final gate probabilities.</p>"
            + _table(["layer", "original operator", "chosen operator", "params before", "params after",
                      "MACs before", "MACs after", "final gate probabilities"], rows, left=3, classes=classes)
            + _img(png, "per-layer MACs and parameters before and after"))
    return text, {"layers.png": png}


def _weights(share: dict) -> tuple[str, dict[str, bytes]]:
    """The share method's decisions, one row per layer in the order the greedy loop tried them."""
    s = share.get("settings", {})
    rows = [[f"<code>{html.escape(r['layer'])}</code>", _fmt(r["significance"], 3), f"{100 * r['sparsity']:.1f}%",
             str(r["codebook"]) if r["codebook"] else "kept (float32)", _fmt(r["bits_per_weight"]),
             html.escape(r["format"]), _fmt(r["accuracy"])] for r in share["layers"]]
    png = plots.share_steps(share["layers"], share["start"], share["pruned"], s.get("budget", 1.0))
    text = (f"<p>Pruned to {100 * s.get('sparsity', 0):.0f}% sparsity with one global magnitude threshold "
            f"(held-out accuracy {share['start']:.2f} → {share['pruned']:.2f}), then layers tried least significant "
            f"first ({html.escape(str(s.get('significance', 'sparsity')))}), each at the smallest codebook of "
            f"{html.escape(', '.join(map(str, s.get('ladder', []))))} values whose held-out accuracy stayed within "
            f"{s.get('budget', 1.0):g} points of the start; decided on {html.escape(str(share.get('decided_on', '')))}"
            f". Weights: {share['original_bits'] / 8192:,.1f} KiB as float32 → {share['stored_bits'] / 8192:,.1f} "
            f"KiB stored ({share['compression']:.1f}x); accuracy is the held-out accuracy after each step.</p>"
            + _table(["layer", "significance", "sparsity", "codebook", "bits / weight", "zeros stored as",
                      "accuracy after"], rows)
            + _img(png, "bits per weight and accuracy after each greedy step"))
    return text, {"share.png": png}


def _gate_curves(report: dict) -> dict[str, dict[str, list[float]]]:
    """layer -> operator -> probability per search epoch, epoch 0 being the prior ``init_gates`` sets."""
    prior = report.get("config", {}).get("original_prob")
    curves = {}
    for r in report["layers"]:
        ops, n = r["candidates"], len(r["candidates"])
        start = [1.0 / n] * n
        if prior is not None and "original" in ops and n > 1:
            start = [prior if op == "original" else (1 - prior) / (n - 1) for op in ops]
        series = [start] + [e["probabilities"][r["name"]] for e in report.get("history", {}).get("search", [])
                            if r["name"] in e.get("probabilities", {})]
        curves[r["name"]] = {op: [s[i] for s in series] for i, op in enumerate(ops)}
    return curves


def _evolution(report: dict, colours: dict) -> tuple[str, dict[str, bytes]]:
    metric = report.get("primary_metric", "accuracy")
    gates = plots.gate_evolution(_gate_curves(report), colours, report["choices"])
    curves = plots.training_curves(report.get("history", {}), metric)
    return ("<p>Each layer's gate probabilities after every search epoch (epoch 0: the starting prior); the "
            "thick line is the operator finally chosen.</p>" + _img(gates, "gate probabilities per layer")
            + f"<p>Validation {html.escape(metric)} through search and fine-tuning, and the cost of the "
            "architecture the gates would pick at each epoch, relative to the original.</p>"
            + _img(curves, "training curves")), {"gates.png": gates, "training.png": curves}


def _tradeoff(report: dict, run_dir: Path, runs: Sequence[Path]) -> tuple[str, dict[str, bytes]]:
    metric = report.get("primary_metric", "accuracy")
    points, rows, classes = [], [], []
    here = run_dir.resolve()
    for path in dict.fromkeys([run_dir.resolve(), *(p.resolve() for p in runs)]):
        r = report if path == here else _read_run(path)
        points.append({"lambda": r["lambda"], "before": r["before"], "after": r["after"], "current": path == here,
                       "unchanged": changed_nothing(r)})
        b, a = r["before"], r["after"]
        rows.append([html.escape(path.name) + (" (nothing compressed)" if changed_nothing(r) else ""),
                     f"{r['lambda']:g}", html.escape(str(r.get("cost", ""))),
                     _fmt(a["params"]), _ratio(b["params"], a["params"]), _fmt(a["macs"]), _ratio(b["macs"], a["macs"]),
                     _fmt(b.get(metric, "-")), _fmt(a.get(metric, "-"))])
        classes.append("current" if path == here else "")
    order = sorted(range(len(rows)), key=lambda i: float(rows[i][1]))
    png = plots.tradeoff(points, metric)
    table = _table(["run", "λ", "cost", "params", "ratio", "MACs", "ratio", f"{metric} before", f"{metric} after"],
                   [rows[i] for i in order], classes=[classes[i] for i in order])
    return (f"<p>{len(points)} run(s): {html.escape(metric)} against parameters and against MACs, one point per "
            "run labelled with its λ; stars mark the original models, grey squares runs that compressed nothing "
            "(every layer kept its original operator). The highlighted row is this run.</p>"
            + _img(png, "accuracy against params and MACs") + table), {"tradeoff.png": png}


def _saliency(cmp: Comparison, x: torch.Tensor, y: torch.Tensor, class_names: Sequence[str]) -> tuple[str, dict]:
    name = (lambda c: class_names[c] if c < len(class_names) else str(c))
    titles = [f"{name(int(t))}\norig→{name(o)}, comp→{name(c)}"
              for t, o, c in zip(y, cmp.predictions["original"], cmp.predictions["compressed"])]
    draw = plots.saliency_images if x.ndim == 4 else plots.saliency_traces
    png = draw(x, cmp.saliency, titles)
    cam = f" at layer <code>{html.escape(cmp.cam_layer)}</code>" if cmp.cam_layer else " (no layer with a spatial output)"
    rows = [[m, f"{r:.3f}"] for m, r in cmp.agreement.items()]
    return (f"<p>The same {len(x)} test inputs through both models: vanilla gradient, SmoothGrad and Grad-CAM{cam}, "
            "each explaining the true class (left of each row: the true class, then each model's prediction)."
            + (" Inputs are 1-D: saliency is a trace over time." if x.ndim == 3 else "") + "</p>"
            + _img(png, "saliency maps") + "<p>Agreement between the original's and the compressed model's maps "
            "(Pearson r per sample, averaged):</p>" + _table(["method", "r"], rows)), {"saliency.png": png}


def _similarity(cmp: Comparison, n_cka: int, n_probe: tuple[int, int]) -> tuple[str, dict] | str:
    if cmp.cka is None and not any(cmp.probes.values()):
        return '<p class="note">Skipped: no CKA samples and no probe samples were asked for.</p>'
    png = plots.similarity(cmp.layers, cmp.cka, cmp.probes)
    same = cmp.cka_by_layer()
    rows = [[f"<code>{html.escape(n)}</code>", f"{same[n]:.3f}" if n in same else "-",
             *(f"{100 * cmp.probes[k][n]:.1f}" if n in cmp.probes.get(k, {}) else "-" for k in ("original", "compressed"))]
            for n in cmp.layers]
    return (f"<p>Linear CKA (Kornblith et al. 2019) between each layer's output in the original and in the "
            f"compressed model, on {n_cka} test inputs (1: same representation up to rotation and scale); and a "
            f"linear probe (logistic regression on 2×2-pooled features, {n_probe[0]} train / {n_probe[1]} test "
            "samples) on every block, for both models.</p>" + _img(png, "CKA and linear probes")
            + _table(["layer", "CKA (same layer)", "probe original (%)", "probe compressed (%)"], rows)),\
        {"similarity.png": png}


def _bundle(data, config: dict, notes: list[str]):
    """The data set for the model-level sections: ``data`` (a DataBundle, or a name/path for ``load_data``),
    else the one config.json names; None (with a note saying why) where there is none."""
    if data is not None and not isinstance(data, (str, Path)):
        return data
    from ..data import load_data, parse_options
    source = data if data is not None else config.get("data")
    if source is None:
        notes.append("no data: the run folder has no config.json naming its data set (runs made with the Python "
                     "API have none); pass data= or --data to get saliency and similarity")
        return None
    try:
        options = parse_options(config.get("data_options") or ()) if data is None else None
        return load_data(str(source), cache_dir=config.get("cache_dir"), options=options or None)
    except (ValueError, OSError) as exc:
        if data is not None:
            raise ReportError(f"data {source!r}: {exc}") from None
        notes.append(f"data {source!r} from config.json cannot be loaded here ({exc}); saliency and similarity "
                     "were skipped (pass data= or --data)")
        return None


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, runs: Iterable[str | Path] = (), *,
                 data=None, samples: int = 4, cka_samples: int = 500, probe_train: int = 2000,
                 probe_test: int = 1000, smoothgrad_samples: int = 25, seed: int = 0,
                 log: Callable[[str], None] = lambda s: None) -> Path:
    """Write ``report.html`` (self-contained), the figures as PNG and ``analysis.json`` (the numbers) into
    ``out_dir`` (default ``RUN_DIR/report``); returns the HTML's path.

    ``runs`` are more run folders, or results folders holding them, for the trade-off plot (this run is always
    in it). ``data`` is a ``DataBundle`` or a ``load_data`` source; default: the one in the run's config.json.
    Saliency uses ``samples`` test inputs (one per class while classes last), CKA ``cka_samples`` test inputs,
    probes ``probe_train`` training and ``probe_test`` test samples.
    """
    run_dir = Path(run_dir)
    report = _read_run(run_dir)
    other_runs = find_runs(runs)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    config = Run(run_dir).read_file(Run.CONFIG) or {}     # the Python API writes none
    notes: list[str] = []
    bundle = _bundle(data, config, notes)
    if bundle is not None and list(bundle.input_shape) != report.get("example_input_shape", [None])[1:]:
        raise ReportError(f"data has samples of shape {tuple(bundle.input_shape)}, the run's model takes "
                          f"{tuple(report.get('example_input_shape', [None])[1:])}")
    original, compressed = _load_models(run_dir, notes)
    colours = plots.op_colours([op for r in report.get("layers", []) for op in r["candidates"]])

    sections, figures = [], {}

    def add(anchor: str, title: str, part: tuple[str, dict[str, bytes]] | str) -> None:
        body, figs = (part, {}) if isinstance(part, str) else part
        sections.append((anchor, title, body))
        figures.update(figs)

    log("architecture, gate evolution, trade-off")
    if report.get("layers"):                # an LWDC run (a share run changes weights, not operators)
        add("architecture", "Architecture before and after", _architecture(report, colours))
        add("evolution", "How the choice evolved", _evolution(report, colours))
    if report.get("share"):
        add("weights", "Weights: layer-wise sharing", _weights(report["share"]))
    add("tradeoff", "Trade-off across runs", _tradeoff(report, run_dir, other_runs))
    numbers: dict = {"run": str(run_dir), "runs": [str(p) for p in other_runs], "notes": notes}
    landmarks = report.get("task") == "landmarks"
    if bundle is not None and original is not None and compressed is not None and landmarks:
        # no class labels: no saliency towards a class, no linear probes; CKA needs inputs only
        from .landmarks import landmark_section
        log("landmarks: points on test frames, per-point errors, CKA")
        names = list((getattr(bundle, "info", {}) or {}).get("points") or [])
        body, figs, numbers["landmarks"] = landmark_section({"original": original, "compressed": compressed},
                                                            bundle.test, report, names)
        add("landmarks", "Landmarks: predicted and true points", (body, figs))
        cka_x, _ = _pick(bundle.test, cka_samples, seed)
        cmp = compare_models(original, compressed, cka_x=cka_x if cka_samples > 1 else None, seed=seed, log=log)
        numbers.update(cmp.as_dict())
        add("similarity", "Representation similarity", _similarity(cmp, len(cka_x), (0, 0)))
    elif bundle is not None and original is not None and compressed is not None:
        sal_x, sal_y = _pick(bundle.test, samples, seed, by_class=True)
        cka_x, _ = _pick(bundle.test, cka_samples, seed)
        probe_data = (*_pick(bundle.train, probe_train, seed), *_pick(bundle.test, probe_test, seed + 1))
        cmp = compare_models(original, compressed, saliency_x=sal_x if samples > 0 else None, saliency_y=sal_y,
                             cka_x=cka_x if cka_samples > 1 else None,
                             probe_data=probe_data if probe_train > 0 and probe_test > 0 else None,
                             smoothgrad_samples=smoothgrad_samples, seed=seed, log=log)
        numbers.update(cmp.as_dict())
        names = list(getattr(bundle, "class_names", None) or [])
        add("saliency", "Saliency: where each model looks",
            _saliency(cmp, sal_x, sal_y, names) if cmp.saliency else '<p class="note">Skipped: samples=0.</p>')
        add("similarity", "Representation similarity",
            _similarity(cmp, len(cka_x), (len(probe_data[0]), len(probe_data[2]))))
        pair = {"original": original, "compressed": compressed}
        if report.get("task", "classification") == "classification" and bundle.num_classes:
            log("detection: ROC curves and confusion matrices on the whole test split")
            body, figs, numbers["detection"] = detection_section(pair, bundle.test, names)
            add("detection", "Detection: confusion matrices and ROC", (body, figs))
        if len(bundle.input_shape) == 2 and bundle.num_classes:
            log("signal saliency per class")
            body, figs, numbers["signal_saliency"] = signal_saliency_section(pair, bundle.test, names,
                                                                             getattr(bundle, "info", {}) or {})
            add("signal-saliency", "Signal saliency: channels x time per class", (body, figs))
    else:
        skipped = '<p class="note">Skipped: ' + html.escape(" ".join(notes)) + "</p>"
        add("saliency", "Saliency: where each model looks", skipped)
        add("similarity", "Representation similarity", skipped)

    out.mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        (out / name).write_bytes(png)
    (out / "analysis.json").write_text(json.dumps(numbers, indent=2) + "\n")
    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in sections)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>lwdc report: {html.escape(run_dir.name)}</title><style>{CSS}</style></head><body>"
            f"<h1>lwdc report: {html.escape(run_dir.name)}</h1><p class=\"sub\">{html.escape(str(run_dir))}, "
            f"generated {time.strftime('%Y-%m-%d %H:%M')}</p><nav>{nav}</nav>"
            f"<h2 id=\"summary\">Summary</h2>{_summary(report, run_dir, notes)}"
            + "".join(f'<h2 id="{a}">{html.escape(t)}</h2>{body}' for a, t, body in sections)
            + "</body></html>\n")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    log(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) and {len(figures)} PNGs")
    return path
