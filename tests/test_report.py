"""`lwdc report` end to end on a quick run: a self-contained page with every section, numbers that agree with
the run, and (where Debian's chromium is installed, as in CI) a headless render without console errors."""
import json
import re
import shutil
import struct
import subprocess
import tempfile

import pytest
from click.testing import CliRunner

from lwdc.cli import main

QUICK = ["--model", "resnet8", "--width", "0.5", "--pretrain-epochs", "1", "--search-epochs", "1",
         "--finetune-epochs", "1", "--max-batches", "3", "--batch-size", "32", "--no-progress", "--warmup-epochs", "0.5"]
SMALL = ["--samples", "2", "--cka-samples", "64", "--probe-train", "96", "--probe-test", "64", "--smoothgrad-samples", "3"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    runner = CliRunner()
    for lam in ("1.0", "4.0"):
        result = runner.invoke(main, ["compress", *QUICK, "--lam", lam, "--run-dir", str(root / "runs" / f"lam{lam}")])
        assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["report", str(root / "runs" / "lam1.0"), "--runs", str(root / "runs"),
                                  "--out", str(root / "out"), *SMALL])
    assert result.exit_code == 0, result.output
    return root


def test_report_is_self_contained_and_has_every_section(report_dir):
    page = (report_dir / "out" / "report.html").read_text()
    for anchor in ("summary", "architecture", "evolution", "tradeoff", "saliency", "similarity"):
        assert f'id="{anchor}"' in page, anchor
    assert "Skipped" not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), [s[:40] for s in sources]
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for png in ("saliency.png", "similarity.png"):
        data = (report_dir / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 200 and height > 100


def test_report_numbers_agree_with_the_run(report_dir):
    run = json.loads((report_dir / "runs" / "lam1.0" / "report.json").read_text())
    page = (report_dir / "out" / "report.html").read_text()
    for row in run["layers"]:                 # one architecture row per expanded layer, with its choice
        cells = rf"<td[^>]*><code>{re.escape(row['name'])}</code></td><td[^>]*>[^<]*</td><td[^>]*>(\w+)</td>"
        match = re.search(cells, page)
        assert match and match.group(1) == row["chosen"], row["name"]
    analysis = json.loads((report_dir / "out" / "analysis.json").read_text())
    assert len(analysis["runs"]) == 2         # both lambdas feed the trade-off plot
    cka = [v for v in analysis["cka_same_layer"].values() if v == v]
    assert cka and all(-1e-6 <= v <= 1 + 1e-6 for v in cka)
    accs = [acc for per_model in analysis["probe_accuracy"].values() for acc in per_model.values()]
    assert accs and all(0 <= acc <= 1 for acc in accs)   # fractions; the page shows percent


def test_report_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "half")])
    assert result.exit_code != 0 and "report.json is missing" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "half" / "report").exists()


def _render(html_path, shot, height=4000):
    """Headless Chromium: screenshot the page; return what the page wrote to its console."""
    profile = tempfile.mkdtemp(prefix="lwdc-chromium-")
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",
                          f"--screenshot={shot}", f"--window-size=1280,{height}", html_path.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    assert shot.exists(), out.stderr[-2000:]
    return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_without_console_errors(report_dir, tmp_path):
    broken = tmp_path / "broken.html"           # the check itself can fail: a page that logs errors is caught
    broken.write_text("<!DOCTYPE html><html><body><script>console.error('planted'); nope();</script></body></html>")
    assert len(_render(broken, tmp_path / "broken.png", 300)) == 2
    shot = report_dir / "out" / "screenshot.png"
    assert _render(report_dir / "out" / "report.html", shot) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1280, 4000)
