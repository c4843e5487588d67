"""The before/after table of a finished compression, for the CLI and the Python API alike."""
from __future__ import annotations

__all__ = ["format_summary"]


def format_summary(report: dict) -> str:
    """The before/after table printed at the end of a run."""
    b, a = report["before"], report["after"]
    metric = report.get("primary_metric", "accuracy")

    def row(label, before, after, fmt):
        ratio = f"{after / before:6.3f}x" if before else "      -"
        return f"| {label:<18} | {fmt(before):>12} | {fmt(after):>12} | {ratio} |"

    lines = [f"| {'':<18} | {'before':>12} | {'after':>12} |   ratio |", f"|{'-' * 20}|{'-' * 14}|{'-' * 14}|---------|",
             row("params", b["params"], a["params"], lambda v: f"{v:,}"),
             row("MACs", b["macs"], a["macs"], lambda v: f"{v:,}"),
             row("latency b=1 (ms)", b["latency_ms"], a["latency_ms"], lambda v: f"{v:.3f}")]
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
    for b in report.get("budgets") or []:
        lines.append(f"target {b['budget']}: {b['achieved_ratio']:.3f}x of the original ({b['achieved']:,.0f} "
                     f"{b['unit']}, limit {b['limit']:,.0f}), {'met' if b['met'] else 'MISSED'}"
                     + (", binds" if b["binding"] else "")
                     + (f"; {len(b['repaired_layers'])} layer(s) repaired" if b["repaired_layers"] else ""))
    lines.append("wall time: " + ", ".join(f"{stage} {s:.0f}s" for stage, s in report["wall_time_s"].items()))
    return "\n".join(lines)
