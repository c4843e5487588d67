"""The microcontroller cost (issue 18): instructions of each candidate branch counted on the emulated Cortex-M4,
cached, and usable as a search budget beside flash and RAM (a board's three limits in one search)."""
import json

import pytest
import torch

from lwdc.costs import build_cost_table, get_cost_model
from lwdc.export.c.targets import get_target
from lwdc.space import expand

from conftest import TinyNet

needs_m4 = pytest.mark.skipif(not get_target("cortex-m4").can_run(), reason="needs arm-none-eabi-gcc, newlib and "
                              "qemu-system-arm (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                              "qemu-system-arm)")


def test_mcu_specs_are_checked():
    with pytest.raises(ValueError, match="not an emulated core"):
        get_cost_model("mcu:host")
    with pytest.raises(ValueError, match="choose int8 or float32"):
        get_cost_model("mcu:cortex-m4:int4")


@needs_m4
def test_branch_instructions_are_measured_once_and_order_the_operators(tmp_path):
    torch.manual_seed(0)
    net = TinyNet(width=8).eval()
    x = torch.randn(1, 3, 16, 16)
    supernet = expand(net, x, "default")
    cost = get_cost_model("mcu:cortex-m4", cache_dir=tmp_path)
    table = build_cost_table(cost, supernet, net, x)
    assert cost.measurements > 0 and table.unit == "instructions"
    layer = supernet.choice_layers()["conv1"]
    c = dict(zip(layer.op_names, table.layer_costs["conv1"].tolist()))
    assert c["skip"] == 0                                    # a same-shape skip executes nothing
    assert c["original"] > c["conv3x3_g2"] > c["conv3x3_g4"] > c["conv1x1"] > 0   # fewer MACs, fewer instructions
    assert abs(table.ratio_of({n: 0 for n in table.layer_costs}) - 1) < 0.02      # the original's layers ~ itself
    again = get_cost_model("mcu:cortex-m4", cache_dir=tmp_path)
    assert build_cost_table(again, supernet, net, x).layer_costs["conv1"].tolist() == list(c.values())
    assert again.measurements == 0                           # every count came from the cache
    cached = json.loads(next((tmp_path / "mcu").glob("cortex-m4-int8-*.json")).read_text())
    assert cached["host"]["core"] == "cortex-m4" and len(cached["entries"]) == cost.measurements


@pytest.mark.slow           # about a minute: every branch of the quick model counted in QEMU
@needs_m4
def test_a_search_keeps_flash_ram_and_instruction_budgets_together(tmp_path):
    """One search under the board's three limits: flash and RAM of the int8 C and instructions on the core."""
    from click.testing import CliRunner

    from lwdc.cli import main
    from test_cli import QUICK

    run = tmp_path / "run"
    done = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run), "--target", "mcu:cortex-m4=0.6x",
                                     "--target", "flash=0.7x", "--target", "ram=0.9x"],
                              env={"LWDC_CACHE_DIR": str(tmp_path / "cache")})
    assert done.exit_code == 0, done.output
    report = json.loads((run / "report.json").read_text())
    kept = {b["cost"]: b for b in report["budgets"]}
    assert set(kept) == {"mcu", "flash", "ram"}
    for b in kept.values():
        assert b["met"], b
