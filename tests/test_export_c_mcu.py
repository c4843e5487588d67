"""The C export built for a Cortex-M core and run on QEMU's MPS2 board (issue 18): float within the export
tolerance of PyTorch, int8 bit for bit the Python integer reference, the library's flash and RAM read from the
object file, failures of the program reported. CI installs the toolchain and QEMU (``.ci/run``); elsewhere the
tests that need them skip with the reason."""
import subprocess

import numpy as np
import pytest
import torch

from lwdc.export import export_c
from lwdc.export.c import CompilerError, compile_library, run_library
from lwdc.export.c.targets import get_target, targets
from lwdc.models import create_model

from conftest import TinyNet
from test_export_c import randomize_bn

M4 = get_target("cortex-m4")
needs_m4 = pytest.mark.skipif(not M4.can_run(), reason="needs arm-none-eabi-gcc, newlib and qemu-system-arm "
                              "(apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm)")


def test_semihosting_targets_pass_arguments_through_qemus_command_line():
    assert {"host", "cortex-m4", "cortex-m7"} <= set(targets())
    cmd = M4.run_command("/tmp/prog.elf", "--int8", "/tmp/a,b/in.bin", "out.bin")
    assert cmd[:3] == ["qemu-system-arm", "-machine", "mps2-an386"] and cmd[-2:] == ["-kernel", "/tmp/prog.elf"]
    config = cmd[cmd.index("-semihosting-config") + 1]
    assert config == "enable=on,target=native,arg=/tmp/prog.elf,arg=--int8,arg=/tmp/a,,b/in.bin,arg=out.bin"
    assert get_target("host").run_command("./m", "x") == ["./m", "x"]


@needs_m4
@pytest.mark.parametrize("dims", [1, 2])
def test_float_and_int8_run_on_an_emulated_cortex_m4(dims, tmp_path):
    torch.manual_seed(0)
    net = randomize_bn(TinyNet(width=8, dims=dims))
    x = torch.randn(4, 3, *((16, 16) if dims == 2 else (48,)))
    f = export_c(net, x, tmp_path / "f", target="cortex-m4")
    assert f.summary["target"] == "cortex-m4"
    assert f.summary["verified"]["max_abs_diff_vs_pytorch"] <= f.summary["verified"]["limit"]
    q = export_c(net, x, tmp_path / "q", int8=True, calib=x, target="cortex-m4")
    assert q.summary["verified"]["int8_matches_reference"] is True
    for e in (f, q):          # the object holds the planned weights and arena; code comes on top
        linked = e.summary["linked"]
        assert linked["const_bytes"] >= e.summary["flash_bytes"] and linked["code_bytes"] > 0
        assert linked["bss_bytes"] >= e.summary["peak_ram_bytes"]
        assert linked["flash_bytes"] == linked["code_bytes"] + linked["const_bytes"] + linked["data_bytes"]
        assert linked["ram_bytes"] == linked["data_bytes"] + linked["bss_bytes"]


@needs_m4
def test_resnet20_int8_is_bit_exact_on_an_emulated_cortex_m4(tmp_path):
    torch.manual_seed(0)
    net = randomize_bn(create_model("resnet20", num_classes=10))
    x = torch.randn(2, 3, 32, 32)
    q = export_c(net, x, tmp_path / "q", int8=True, calib=x, target="cortex-m4")
    assert q.summary["verified"]["int8_matches_reference"] is True
    host = export_c(net, x, tmp_path / "h", int8=True, calib=x)
    exe = {t: compile_library(d, "model", target=t) for t, d in (("host", tmp_path / "h"), ("cortex-m4", tmp_path / "q"))}
    xq = q.qgraph.qp(q.graph.input).quantize(x.reshape(2, -1).numpy())
    outs = [run_library(exe[t], xq, 10, int8=True, target=t) for t in ("host", "cortex-m4")]
    assert np.array_equal(*outs)                         # the same integers on x86 and on the Cortex-M4
    assert host.summary["flash_bytes"] == q.summary["flash_bytes"]


@needs_m4
def test_coded_weights_decode_on_the_cortex_m4_as_on_the_host(tmp_path):
    from test_export_c_codebook import shared_tiny
    net = shared_tiny()
    x = torch.randn(3, 3, 16, 16)
    outs = []
    for mode in ("dense", "on-the-fly"):
        e = export_c(net, x, tmp_path / mode, weights=mode, target="cortex-m4")
        outs.append(run_library(compile_library(e.directory, "model", target="cortex-m4"),
                                x.reshape(3, -1).numpy(), 4, target="cortex-m4"))
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))


@needs_m4
def test_a_program_that_fails_on_the_board_is_reported(tmp_path):
    torch.manual_seed(0)
    e = export_c(randomize_bn(TinyNet(width=4)), torch.randn(1, 3, 8, 8), tmp_path / "f", target="cortex-m4",
                 verify=False)
    exe = compile_library(e.directory, "model", target="cortex-m4")
    done = subprocess.run(M4.run_command(exe, str(tmp_path / "missing.bin"), str(tmp_path / "out.bin")),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "missing.bin" in done.stderr + done.stdout    # main's status reaches QEMU's
    with pytest.raises(CompilerError, match="wrote 0 output values, expected 1 x 4"):
        run_library(exe, np.zeros((1, 5), np.float32), 4, target="cortex-m4")     # a short input: no output


def _loop_ticks(target, tmp_path) -> int:
    """SysTick ticks a loop of 1,000,000 instructions (500,000 x subs + bne) takes on ``target`` under -icount."""
    loop = tmp_path / "loop.c"
    loop.write_text('''#include <stdint.h>
#include <stdio.h>
#define CVR (*(volatile uint32_t *)0xE000E018u)
int main(void)
{
    uint32_t a, b;
    *(volatile uint32_t *)0xE000E014u = 0xFFFFFFu;
    CVR = 0;
    *(volatile uint32_t *)0xE000E010u = 5u;
    a = CVR;
    __asm__ volatile("mov r2, %0\\n1:\\n\\tsubs r2, r2, #1\\n\\tbne 1b" : : "r"(500000) : "r2", "cc");
    b = CVR;
    printf("%lu\\n", (unsigned long)((a - b) & 0xFFFFFFu));
    return 0;
}
''')
    exe = tmp_path / "loop.elf"
    subprocess.run([target.find_compiler(), *target.flags, "-O2", str(loop), *target.sources, *target.libs, "-o",
                    str(exe)],
                   check=True, capture_output=True)
    out = subprocess.run(target.run_command(exe, runner_flags=("-icount", "shift=0")), capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return int(out.split()[-1])


@pytest.mark.parametrize("core", ["cortex-m7", "cortex-m33"])
def test_other_cores_run_int8_bit_exact_and_count_40_instructions_per_tick(core, tmp_path):
    """The Cortex-M7 (AN500) and the Cortex-M33 (AN505, TrustZone: code and data at the secure aliases) boards."""
    target = get_target(core)
    if not target.can_run():
        pytest.skip(f"needs {target.description}")
    per_tick = target.instructions_per_tick          # 40 at 25 MHz (AN386, AN500), 50 at 20 MHz (AN505)
    assert per_tick == {"cortex-m7": 40, "cortex-m33": 50}[core]
    assert abs(_loop_ticks(target, tmp_path) * per_tick - 1_000_000) <= 2 * per_tick
    torch.manual_seed(0)
    net = randomize_bn(TinyNet(width=8))
    x = torch.randn(2, 3, 16, 16)
    q = export_c(net, x, tmp_path / "q", int8=True, calib=x, target=core)
    assert q.summary["verified"]["int8_matches_reference"] is True and q.summary["linked"]["code_bytes"] > 0


@needs_m4
def test_instruction_counts_are_per_node_deterministic_and_calibrated(tmp_path):
    """The SysTick method counts 40 instructions per tick: a loop of a known length reads as that length, and the
    per-node counts of an inference add up to its total, the same on every run."""
    from lwdc.export.c.instructions import INSTRUCTIONS_PER_TICK, count_instructions
    from lwdc.export.c.targets import _MCU

    assert abs(_loop_ticks(M4, tmp_path) * INSTRUCTIONS_PER_TICK - 1_000_000) <= 2 * INSTRUCTIONS_PER_TICK
    assert (_MCU / "profile.c").exists()

    torch.manual_seed(0)
    net = randomize_bn(TinyNet(width=8))
    x = torch.randn(2, 3, 16, 16)
    e = export_c(net, x, tmp_path / "q", int8=True, calib=x, target="cortex-m4", verify=False)
    first, second = count_instructions(e, x[0]), count_instructions(e, x[0])
    assert first == second and first["precision"] == "int8"
    assert 0 < first["stack_bytes"] < 65536 and first["stack_bytes"] % 4 == 0    # the painted words it reached
    assert first["instructions"] == sum(n["instructions"] for n in first["per_node"]) > 0
    assert [n["op"] for n in first["per_node"]] == [n.op for n in e.graph.nodes]
    convs = [n["instructions"] for n in first["per_node"] if n["op"] == "conv"]
    assert max(convs) > 10 * min(n["instructions"] for n in first["per_node"] if n["op"] == "gap")
    with pytest.raises(ValueError, match="need an emulated Cortex-M target"):
        count_instructions(export_c(net, x, tmp_path / "h", verify=False))


@needs_m4
def test_profile_command_counts_instructions_on_the_emulated_core():
    import json as _json

    from click.testing import CliRunner

    from lwdc.cli import main

    done = CliRunner().invoke(main, ["profile", "resnet8", "--width", "0.25", "--target", "cortex-m4", "--int8",
                                     "--json"])
    assert done.exit_code == 0, done.output
    counts = _json.loads(done.output.strip().splitlines()[-1])
    assert counts["target"] == "cortex-m4" and counts["instructions"] > 0 and counts["per_node"]
    bad = CliRunner().invoke(main, ["profile", "resnet8", "--target", "host"])
    assert bad.exit_code != 0 and "cortex-m4" in bad.output


@needs_m4
def test_one_command_leaves_a_firmware_folder_for_the_board(tmp_path):
    """lwdc compress ... --target cortex-m4: the compressed model as int8 C verified on the emulated core, with
    flash and RAM from the object, instructions per inference and the int8 C's test accuracy in deploy.json."""
    import json as _json

    from click.testing import CliRunner

    from lwdc.cli import main
    from test_cli import QUICK

    run = tmp_path / "run"
    done = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run), "--target", "cortex-m4"])
    assert done.exit_code == 0, done.output
    deploy = _json.loads((run / "firmware" / "deploy.json").read_text())
    assert deploy["target"] == "cortex-m4" and deploy["precision"] == "int8"
    assert deploy["verified"]["int8_matches_reference"] is True
    assert deploy["linked"]["flash_bytes"] > deploy["flash_bytes"] > 0
    assert deploy["instructions_per_inference"] == deploy["instructions"]["instructions"] > 0
    assert 0 <= deploy["accuracy_int8_c"] <= 100 and "firmware:" in done.output
    config = _json.loads((run / "config.json").read_text())
    assert config["export"] == "c" and config["export_target"] == "cortex-m4" and config["budgets"] == []
    bad = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(tmp_path / "x"), "--target", "esp32"])
    assert bad.exit_code != 0 and "give COST=LIMIT" in bad.output and not (tmp_path / "x").exists()
