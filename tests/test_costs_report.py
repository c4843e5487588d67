"""The per-layer cost table (lwdc.costs.report) and ``lwdc profile --cost`` / ``lwdc compress --cost``."""
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from lwdc.cli import main
from lwdc.costs.report import format_layer_report, layer_report
from lwdc.costs.systolic import SystolicArray, conv_shapes, estimate


def test_layer_report_rows_and_totals(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                        nn.Conv2d(16, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.randn(1, 3, 16, 16)
    report = layer_report(net, x, ["macs", "latency", "systolic:8x8"], cache_dir=tmp_path)
    rows = report["rows"]
    assert [r["op"] for r in rows] == ["conv3x3", "depthwise3x3", "pointwise", "linear"]
    assert [r["params"] for r in rows] == [448, 160, 136, 36]
    assert report["total"]["params"] == sum(r["params"] for r in rows)
    assert report["total"]["macs"] == sum(r["macs"] for r in rows) == 16 * 16 * (16 * 27 + 16 * 9 + 8 * 16) + 32
    shapes = [c.shape for c in conv_shapes(net, x)]
    assert [r["cycles[systolic:8x8]"] for r in rows] == [estimate(s, SystolicArray(8, 8)).cycles for s in shapes]
    dw, std = rows[1]["util[systolic:8x8]"], rows[0]["util[systolic:8x8]"]
    assert dw < std / 3
    assert all(r["ms[latency]"] > 0 for r in rows) and report["total"]["ms[latency]"] > 0
    table = format_layer_report(report)
    assert table.count("\n") == len(rows) + 2 and "depthwise3x3" in table and "| total" in table


@pytest.mark.slow       # a whole (tiny) compress run: ~25 s of CPU, a minute on a busy machine
def test_compress_with_systolic_cost_then_profile_the_run(tmp_path):
    run = tmp_path / "run"
    env = {"LWDC_CACHE_DIR": str(tmp_path / "cache")}
    args = ["compress", "--model", "resnet8", "--width", "0.5", "--search-epochs", "1", "--finetune-epochs", "1",
            "--max-batches", "2", "--batch-size", "32", "--no-progress", "--warmup-epochs", "0", "--lam", "3",
            "--cost", "systolic:16x16:risa", "--run-dir", str(run)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    assert report["cost"] == "systolic" and report["config"]["cost"] == "systolic:16x16:risa"
    out = CliRunner().invoke(main, ["profile", str(run), "--cost", "systolic,latency", "--json"], env=env)
    assert out.exit_code == 0, out.output
    table = json.loads(out.output)
    assert table["total"]["macs"] == report["after"]["macs"]
    assert table["total"]["params"] == report["after"]["params"]
    assert table["total"]["cycles[systolic]"] > 0 and table["total"]["ms[latency]"] > 0


def test_unknown_costs_are_refused_before_anything_runs(tmp_path):
    bad = CliRunner().invoke(main, ["compress", "--cost", "energy", "--run-dir", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "unknown cost model 'energy'" in bad.output
    assert not (tmp_path / "bad").exists()
    out = CliRunner().invoke(main, ["profile", "resnet8", "--cost", "latency:tensorrt"])
    assert out.exit_code != 0 and "unknown latency backend 'tensorrt'" in out.output
