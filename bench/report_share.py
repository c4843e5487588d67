"""The weight-sharing section of docs/RESULTS.md, from ``bench/results/share/*.json`` (``bench.share``).

One table per data set: for each source model (the uncompressed baseline, and the LWDC result for the chained
row), every method's test accuracy against the source's, the change, the compression of the weights (32-bit
floats / stored bits), MACs, and the float C export's flash and peak RAM (dense, and with the shared layers
decoded at start-up or on the fly). A row meets the issue's bar when its accuracy is within 1.0 point.
"""
from __future__ import annotations

import json
from pathlib import Path

MARKERS = ("<!-- bench:share:start -->", "<!-- bench:share:end -->")
ORDER = ("share", "kmeans-2", "kmeans-4", "kmeans-16", "kmeans-64", "ptq-int8", "ptq-int4")
BAR = 1.0


def load(results: Path) -> list[dict]:
    return [json.loads(f.read_text()) for f in sorted((results / "share").glob("*.json"))]


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f}"


def _c(row: dict, mode: str, key: str) -> int | None:
    c = row.get("c") or {}
    return (c.get(mode) or {}).get(key)


def _table(rows: list[dict]) -> list[str]:
    reference = next((r for r in rows if r["source"] == "baseline"), None)
    lines = ["| source | method | accuracy (%) | change | weight bits | compression | MACs | flash KiB dense -> "
             "coded | peak RAM KiB dense / start-up / on-the-fly |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(rows, key=lambda r: (r["source"] != "baseline", ORDER.index(r["method"].split("-b")[0])
                                       if r["method"].split("-b")[0] in ORDER else 99, r["method"]))
    for r in rows:
        coded = _c(r, "startup", "flash_bytes")
        macs = f"{r['macs']:,}" + (f" ({r['macs'] / reference['macs']:.3f}x)" if reference and r["source"] != "baseline"
                                   else "")
        lines.append(
            f"| {r['source_model']} | {r['method']} | {r['accuracy']:.2f} (from {r['source_accuracy']:.2f}) | "
            f"{r['delta']:+.2f}{'' if r['delta'] >= -BAR else ' ✗'} | {r['bits_per_weight']:.2f} / weight | "
            f"{r['compression']:.1f}x | {macs} | "
            + (f"{_kib(_c(r, 'dense', 'flash_bytes'))} -> {_kib(coded)}" if coded else "-") + " | "
            + (" / ".join(_kib(_c(r, m, "peak_ram_bytes")) for m in ("dense", "startup", "on-the-fly"))
               if coded else "-") + " |")
    return lines


def section(results: Path) -> str:
    rows = load(results)
    if not rows:
        return ""
    out = ["## Weight sharing (issue 20): the second method, its baselines, and LWDC then sharing", "",
           "From `python -m bench.share --set cifar|fsdd` (one JSON per row under `bench/results/share/`). Each "
           "method starts from a trained source model; `share` decides on data kept apart from what the row reports on "
           "(named under each table) and is fine-tuned after. *weight bits*: what the C export stores for the "
           "prunable layers (codebook, packed codes, zeros as a bitmap or a code; float32 where a layer was kept; "
           "PTQ: B bits + one float scale per channel), per original weight. *compression*: 32 / that. ✗: more "
           f"than {BAR:g} point below the source. Flash and RAM: the float C export, weights dense or "
           "codebook-coded (decoded into RAM once, or into one layer-sized buffer before each layer).", ""]
    for name in sorted({r["set"] for r in rows}):
        group = [r for r in rows if r["set"] == name]
        decided = sorted({r["decided_on"] for r in group if r.get("decided_on")})
        reported = sorted({r.get("reported_on", "the test split") for r in group})
        out += [f"**{name}**", "", *_table(group), "",
                f"- decisions of `share` on: {'; '.join(decided) or '-'}; accuracy reported on: {'; '.join(reported)}."]
        for r in group:
            if r["method"].startswith("share") and r.get("layers"):
                kept = [x["layer"] for x in r["layers"] if not x["codebook"]]
                sizes = ", ".join(f"{x['layer']} {x['codebook'] or 'float'}" for x in r["layers"])
                out.append(f"- {r['source_model']}, {r['method']}: layers in the order tried: {sizes}"
                           + (f"; kept as they were: {', '.join(kept)}" if kept else "") + ".")
        out.append("")
    return "\n".join(out)
