"""The before/after table of a finished compression, for the CLI and the Python API alike."""
from __future__ import annotations

__all__ = ["format_summary", "format_latency", "changed_nothing"]

_BACKEND_LABEL = {"eager": "eager", "onnxruntime": "ORT"}


def changed_nothing(report: dict) -> bool:
    """True for a run whose every layer kept its original operator (the result is the original architecture,
    fine-tuned): a run that compressed nothing, which plots and summaries must not present as compressed."""
    choices = report.get("choices") or {}
    if choices:
        return all(op == "original" for op in choices.values())
    b, a = report.get("before", {}), report.get("after", {})
    return bool(b) and all(b.get(k) == a.get(k) for k in ("params", "macs"))


def format_latency(latency: dict, first: str = "original", second: str = "compressed") -> list[str]:
    """Lines about a paired ``compare_latency`` measurement (its ``as_dict``): per back end the median per-round
    ratio with its interval, and whether the spread is larger than the difference."""
    backends = latency.get("backends", {})
    if not backends:
        return []
    some = next(iter(backends.values()))
    level = f"{100 * some['interval_confidence']:.0f}% " if "interval_confidence" in some else ""
    head = (f"latency: batch {latency.get('batch_size', 1)}, {latency.get('threads', 1)} thread(s), {first} and "
            f"{second} alternating over {some['rounds']} rounds; ratio: median of the per-round ratios "
            f"[its {level}interval]"
            + (f"; load average {latency['load_average_1m']:.1f}"
               if latency.get("load_average_1m") is not None else ""))
    lines = [head]
    for name, b in backends.items():
        if "ratio" not in b:
            lines.append(f"  {name}: {b['a_ms']:.3f} ms [{b['a_range_ms'][0]:.3f}-{b['a_range_ms'][1]:.3f}]")
            continue
        lo, hi = b.get("ratio_interval", b["ratio_range"])
        verdict = ("the spread is larger than the difference: no measurable change" if b["within_noise"] else
                   f"{second} {'faster' if b['ratio'] < 1 else 'slower'}")
        lines.append(f"  {name}: {b['a_ms']:.3f} -> {b['b_ms']:.3f} ms, {b['ratio']:.3f}x [{lo:.3f}-{hi:.3f}]: "
                     f"{verdict}")
    lines += [f"  {note}" for note in latency.get("notes", [])]
    return lines


def format_summary(report: dict) -> str:
    """The before/after table printed at the end of a run."""
    b, a = report["before"], report["after"]
    metric = report.get("primary_metric", "accuracy")

    def row(label, before, after, fmt):
        ratio = f"{after / before:6.3f}x" if before else "      -"
        return f"| {label:<18} | {fmt(before):>12} | {fmt(after):>12} | {ratio} |"

    lines = [f"| {'':<18} | {'before':>12} | {'after':>12} |   ratio |", f"|{'-' * 20}|{'-' * 14}|{'-' * 14}|---------|",
             row("params", b["params"], a["params"], lambda v: f"{v:,}"),
             row("MACs", b["macs"], a["macs"], lambda v: f"{v:,}")]
    latency = report.get("latency") or {}
    paired = {k: v for k, v in latency.get("backends", {}).items() if "ratio" in v}
    if paired:
        for name, t in paired.items():
            lines.append(f"| {'latency ' + _BACKEND_LABEL.get(name, name) + ' (ms)':<18} | {t['a_ms']:>12.3f} | "
                         f"{t['b_ms']:>12.3f} | {t['ratio']:6.3f}x{'~' if t['within_noise'] else ' '}|")
    else:       # a report written before latency was measured in pairs: one median each
        lines.append(row("latency b=1 (ms)", b["latency_ms"], a["latency_ms"], lambda v: f"{v:.3f}"))
    if metric in b and metric in a:
        lines.append(f"| {metric + ' (%)':<18} | {b[metric]:>12.2f} | {a[metric]:>12.2f} | "
                     f"{a[metric] - b[metric]:+6.2f}  |")
    counts: dict[str, int] = {}
    for op in report["choices"].values():
        counts[op] = counts.get(op, 0) + 1
    if report.get("method", "lwdc") == "lwdc":
        lines.append(f"lambda {report['lambda']}, cost {report['cost']}; chosen operators: "
                     + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    elif counts:
        lines.append(f"method {report['method']}; choices: "
                     + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    share = report.get("share")
    if share:
        lines.append(f"weights: {share['original_bits'] / 8:,.0f} B as float32 -> {share['stored_bits'] / 8:,.0f} B "
                     f"stored ({share['compression']:.1f}x); validation {share['start']:.2f} at the start, "
                     f"{share['final']:.2f} after sharing (budget {share['settings']['budget']:g} points)")
    for b in report.get("budgets") or []:
        lines.append(f"target {b['budget']}: {b['achieved_ratio']:.3f}x of the original ({b['achieved']:,.0f} "
                     f"{b['unit']}, limit {b['limit']:,.0f}), {'met' if b['met'] else 'MISSED'}"
                     + (", binds" if b["binding"] else "")
                     + (f"; {len(b['repaired_layers'])} layer(s) repaired" if b["repaired_layers"] else ""))
    if paired:
        lines += format_latency(latency)
        if any(t["within_noise"] for t in paired.values()):
            lines.append("  (~: the interval contains 1, no measurable change)")
    if changed_nothing(report):
        lines.append("nothing was compressed: every layer kept its original operator (the result is the original "
                     "architecture, fine-tuned)")
    lines.append("wall time: " + ", ".join(f"{stage} {s:.0f}s" for stage, s in report["wall_time_s"].items()))
    return "\n".join(lines)
