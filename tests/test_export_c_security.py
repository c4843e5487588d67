"""Generated C is compiled and run by the export's own check, so text from the model must never become code.

The key test plants a marker: a submodule named so that, written raw into a C comment, it closes the comment and
defines a constructor that creates a file when the verification program starts. A control compiles the same
payload the way the old exporter wrote it, to show that the payload is live."""
import os
import subprocess
import uuid

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lwdc.export.c import compile_library, export_c, find_compiler
from lwdc.export.c.safe import c_comment, check_name

needs_cc = pytest.mark.skipif(find_compiler() is None or not os.path.isdir("/tmp"), reason="no C compiler or /tmp")


@pytest.fixture
def marker():
    path = f"/tmp/lwdc_marker_{os.getpid()}_{uuid.uuid4().hex}"  # no '.': torch refuses dots in module names
    yield path
    if os.path.exists(path):
        os.remove(path)


def payload(marker: str) -> str:
    """Closes the comment and lw_body, defines a constructor that creates ``marker``, reopens a function."""
    return ("x*/\n}\nextern\tint\tcreat(const\tchar*,unsigned);\n"
            f"__attribute__((constructor))\tstatic\tvoid\tlwdc_evil(void){{creat(\"{marker}\",0600);}}\n"
            "void\tlwdc_rest(float*A);\nvoid\tlwdc_rest(float*A){\n/*")


def hostile_model(name: str) -> nn.Module:
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3))
    model.add_module(name, nn.MaxPool2d(2))  # no parameters: torch.export takes any name without '.' here
    return model.eval()


@needs_cc
def test_payload_is_live_when_written_raw(marker, tmp_path):
    """Control: the generated library with the payload put raw where the module path goes (as the exporter used
    to write it) compiles with the export's strict flags, and the program creates the marker when it starts."""
    export_c(hostile_model("SPOT"), torch.randn(2, 3, 8, 8), tmp_path / "c", verify=False)
    source = (tmp_path / "c" / "model.c").read_text()
    assert source.count("maxpool <- SPOT */") == 1
    (tmp_path / "c" / "model.c").write_text(source.replace("SPOT */", payload(marker) + " */"))
    exe = compile_library(tmp_path / "c", out=tmp_path / "prog")
    subprocess.run([str(exe)], capture_output=True)  # usage error, but constructors run first
    assert os.path.exists(marker)


@needs_cc
@pytest.mark.parametrize("int8", [False, True])
def test_hostile_module_name_is_not_compiled_into_the_verified_program(marker, int8, tmp_path):
    model = hostile_model(payload(marker))
    x = torch.randn(8, 3, 8, 8)
    result = export_c(model, x, tmp_path / "c", int8=int8, calib=x)
    assert result.summary["verified"] is not None  # exported, compiled and run
    assert not os.path.exists(marker)
    source = (tmp_path / "c" / "model.c").read_text()
    evil = [line for line in source.splitlines() if "lwdc_evil" in line]
    assert len(evil) == 1 and evil[0].startswith("    /* maxpool <- x__")  # kept, as one harmless comment
    for line in source.split("static void lw_body(void)")[1].splitlines():  # kernels hold multi-line comments
        if "/*" in line or "*/" in line:
            assert line.count("/*") == line.count("*/") == 1 and line.rstrip().endswith("*/"), line


@needs_cc
@pytest.mark.parametrize("name", ["a*/b", "a/*b", "a//b", "back\\slash", "tri??/graph", "new\nline", "tab\tbed",
                                  "ünïcödé ☃", "quote\"s'", "#define X"])
def test_odd_module_names_export_and_reach_only_comments(name, tmp_path):
    result = export_c(hostile_model(name), torch.randn(2, 3, 8, 8), tmp_path / "c")
    assert result.summary["verified"]["max_abs_diff_vs_pytorch"] <= 1e-4
    source = (tmp_path / "c" / "model.c").read_text()
    assert source.isascii() and "\\" not in source.split("lw_body")[1]


@pytest.mark.parametrize("name", ["x */ int evil(void){return 0;} /*", "model\n", "1abc", "a" * 33, "", "naïve",
                                  "../../etc/x", "main", "lw_conv", "a-b", "a.b"])
def test_hostile_name_parameter_is_refused_before_anything_is_written(name, tmp_path):
    with pytest.raises(ValueError, match="name") as err:
        export_c(hostile_model("pool"), torch.randn(2, 3, 8, 8), tmp_path / "c", name=name)
    assert "\n" not in str(err.value)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="name"):
        compile_library(tmp_path, name)


def test_good_names_pass():
    for name in ("model", "_m", "Net_2", "a" * 32):
        assert check_name(name) == name


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_comment_helper_keeps_only_harmless_characters(text):
    comment = c_comment(text)
    inner = comment[3:-3]
    assert comment.startswith("/* ") and comment.endswith(" */") and inner.isascii()
    for bad in ("*", "/", "\\", "?", "\n", "\r", "\t", "\0"):
        assert bad not in inner
    assert len(inner) <= 160
