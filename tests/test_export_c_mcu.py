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
