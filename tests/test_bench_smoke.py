"""Smoke test of the CIFAR benchmark harness: every stage for a few batches, on the shipped subset.

Keeps `bench.cifar`, `bench.pruning` and `bench.report` working without the full data set or ../shared.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/ is not installed: import it from the checkout
cifar = pytest.importorskip("bench.cifar")
report = pytest.importorskip("bench.report")


def run(tmp_path, *args, schedule="smoke"):
    return cifar.main(["--model", "resnet8", "--width", "0.25", "--schedule", schedule, "--data", "cifar10-subset",
                       "--max-batches", "2", "--cache-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
                       "--no-onnx", "--quick-latency", *args])


def test_harness_runs_resumes_and_reports(tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    base = run(tmp_path, "--method", "baseline")
    lw = run(tmp_path, "--method", "lwdc", "--lam", "2", "--ops", "minimal")
    pr = run(tmp_path, "--method", "prune-l1-global", "--lam", "2", "--ops", "minimal")

    assert base["macs_ratio"] == 1.0 and base["accuracy"] == base["baseline_accuracy"]
    assert lw["baseline_accuracy"] == base["accuracy"]        # every method starts from the same cached baseline
    assert pr["matches"] == "lwdc-minimal-lam2-noise0.25" and pr["target_macs"] == lw["macs"]
    if pr["matched_within_5pct"]:
        assert abs(pr["macs"] / lw["macs"] - 1) <= 0.05
    for r in (base, lw, pr):
        assert set(r["latency_ms"]) == {"eager_b1", "eager_b64"} and r["git"]["commit"]
        assert r["memory"]["peak_rss_mb"] >= r["memory"]["rss_before_training_mb"] > 0
    files = sorted(p.name for p in (tmp_path / "out").glob("*.json"))
    assert len(files) == 3 and json.loads((tmp_path / "out" / files[0]).read_text())["schedule"] == "smoke"

    # a finished run is not repeated: the same command returns the stored result
    assert run(tmp_path, "--method", "lwdc", "--lam", "2", "--ops", "minimal") == lw
    # a longer fine-tune of the same point starts from its finished search: same architecture, more epochs
    capsys.readouterr()
    longer = run(tmp_path, "--method", "lwdc", "--lam", "2", "--ops", "minimal", "--finetune-epochs", "2")
    out = capsys.readouterr().out
    assert "starting from the finished search" in out and "search: finished earlier" in out
    assert "search    epoch" not in out
    assert longer["run"] == "lwdc-minimal-lam2-noise0.25-ft2" and longer["choices"] == lw["choices"]
    assert longer["macs"] == lw["macs"] and longer["epochs"]["finetune"] == 2 and longer["search_of"] == lw["run"]
    assert (tmp_path / "runs" / "resnet8_smoke_s0_w0.25_mb2" / "lwdc-minimal-lam2-noise0.25-ft2" / "checkpoints").is_dir()
    # a schedule that shares smoke's searches fine-tunes the same point without searching again
    shared = run(tmp_path, "--method", "lwdc", "--lam", "2", "--ops", "minimal", schedule="smoke-long")
    out = capsys.readouterr().out
    assert "starting from the finished search" in out and "search    epoch" not in out
    assert "train: finished earlier" in out                   # and from smoke's cached baseline
    assert shared["search_reused_from"] == "resnet8_smoke_s0_w0.25_mb2/lwdc-minimal-lam2-noise0.25"
    assert shared["choices"] == lw["choices"] and shared["epochs"]["finetune"] == 2

    doc = tmp_path / "docs" / "RESULTS.md"
    doc.parent.mkdir()
    doc.write_text("# Results\n\nkept above\n\n<!-- bench:cifar:start -->\nold\n<!-- bench:cifar:end -->\n\n"
                   "## Latency-aware search (issue 5)\nkept below\n")
    report.main(["--results", str(tmp_path / "out"), "--doc", str(doc)])
    text = doc.read_text()
    assert "kept above" in text and "kept below" in text and "old" not in text
    assert text.count("<!-- bench:cifar:start -->") == 1 and "| lwdc-minimal-noise0.25 |" in text
    assert "| lwdc-minimal-noise0.25-ft2 | minimal λ=2, noise→0.25, fine-tune 2 |" in text     # listed, labelled, kept apart
    assert list(doc.parent.glob("pareto_resnet8_smoke*.png"))


def test_pruning_needs_a_finished_lwdc_point(tmp_path):
    pytest.importorskip("torch_pruning")
    with pytest.raises(SystemExit, match="has not finished"):
        run(tmp_path, "--method", "prune-l1", "--lam", "0.5", "--max-batches", "1")


def test_pruning_meets_a_macs_target_and_leaves_the_model_alone():
    pytest.importorskip("torch_pruning")
    import torch

    from bench.pruning import prune_to_macs
    from lwdc.models import create_model
    from lwdc.profiling import count_macs

    torch.manual_seed(0)
    model, x = create_model("resnet8", width=0.5), torch.randn(1, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    full = count_macs(model, x)
    pruned, ratio, macs = prune_to_macs(model, x, full // 2, global_pruning=True)
    assert 0 < ratio < 1 and macs == count_macs(pruned, x)
    assert abs(macs / (full // 2) - 1) <= 0.05
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def _result(run, method, macs, acc, **extra):
    return {"run": run, "method": method, "macs": macs, "macs_ratio": macs / 100, "accuracy": acc, "ops": "default",
            "lambda": 1.5, "epochs": {"search": 2, "finetune": 3}, "choices": {"a": "skip"},
            "schedule_settings": {"finetune_lr": 0.05, "search_lr": 0.05}, **extra}


def test_a_variant_point_is_compared_with_the_pruning_run_nearest_its_macs():
    """An LWDC variant (-noiseX) has no pruning twin: it is paired with the nearest pruning run within 5% MACs."""
    named = _result("lwdc-default-lam1.5", "lwdc", 36.0, 79.0)
    variant = _result("lwdc-default-lam1.5-noise0.25", "lwdc", 37.0, 81.0, noise_end=0.25,
                      search_of="lwdc-default-lam1.5-noise0.25")
    far = _result("lwdc-default-lam1-noise0.25", "lwdc", 50.0, 82.0, noise_end=0.25, lam=1.0,
                  search_of="lwdc-default-lam1-noise0.25")
    twin = _result("prune-l1-global-default-lam1.5", "prune-l1-global", 36.0, 80.0, matches="lwdc-default-lam1.5",
                   macs_error=0.0, matched_within_5pct=True)
    other = _result("prune-l1-global-default-lam2", "prune-l1-global", 38.5, 80.5, matches="lwdc-default-lam2",
                    macs_error=0.0, matched_within_5pct=True)
    lines, verdicts = report.matched_table([named, variant, far, twin, other])
    assert len(lines) == 2 + 2            # the named pair and the variant's nearest; nothing for the 0.50x point
    assert verdicts[0].startswith("At matched MACs, default λ=1.5 vs prune-l1-global: LWDC < pruning (-1.00 points)")
    assert verdicts[1] == ("At matched MACs, default λ=1.5, noise→0.25 vs prune-l1-global → default λ=1.5: "
                           "LWDC >= pruning (+1.00 points)")
    assert verdicts[2].startswith("Where LWDC trails") and len(verdicts) == 3    # explained once, not per pair
    assert "| -2.7% | yes |" in lines[3]  # 36.0 / 37.0 - 1


def test_run_names_label_every_setting_that_changes_the_result():
    assert cifar.run_name("lwdc", 1.5, "default", None) == "lwdc-default-lam1.5"
    assert cifar.run_name("lwdc", 1.5, "default", None, 6, noise_end=0.25) == "lwdc-default-lam1.5-noise0.25-ft6"
    pruned = cifar.run_name("prune-l1-global", 1.5, "default", None, noise_end=0.25)
    assert pruned == "prune-l1-global-default-lam1.5-noise0.25"           # matched to the noise variant
    assert cifar.run_name("baseline-extended", None, "default", None, noise_end=0.25) == "baseline-extended"
    assert report.point({"method": "prune-l1", "matches": "lwdc-default-lam1.5-noise0.25"}) == \
        "→ default λ=1.5, noise→0.25"


@pytest.mark.parametrize("argv, message", [
    (["--method", "prune-l1", "--target", "0.5", "--noise-end", "0.25"], "not with --target"),
    (["--method", "lwdc", "--lam", "1", "--noise-end", "0"], "takes a value in (0, 1]"),
    (["--method", "lwdc", "--noise-end", "0.5"], "needs --lam"),
])
def test_bad_command_lines_name_the_problem(argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        cifar.parse(argv)


def test_noise_end_defaults_to_the_library_default_and_pruning_by_target_needs_none():
    from lwdc.api import CompressConfig

    assert cifar.parse(["--method", "lwdc", "--lam", "1"]).noise_end == CompressConfig.noise_end
    assert cifar.parse(["--method", "prune-l1", "--target", "0.5"]).target == 0.5     # no noise to match


def test_a_schedule_measured_on_two_machines_names_both(tmp_path):
    """Runs carried between sessions (bench.carry) may finish on machines with different vector units; the report
    must not describe them all by the first result's machine."""
    old = {"cpu": "AMD EPYC", "cpu_count": 2, "torch": "2.13.0+cpu", "train_threads": 1}
    new = {**old, "cpu_capability": "AVX2"}
    assert report.machine_label(old) == "AMD EPYC (2 cores, shared), torch 2.13.0+cpu, training on 1 thread(s)"
    assert report.machine_label(new) == "AMD EPYC (2 cores, AVX2, shared), torch 2.13.0+cpu, training on 1 thread(s)"
    settings = {"baseline_epochs": 6, "lr": 0.1, "warmup_epochs": 0.5, "search_epochs": 2, "search_lr": 0.05,
                "finetune_epochs": 3, "finetune_lr": 0.05, "post_epochs": 6}
    common = {"model": "resnet20", "schedule": "cpu-long", "seed": 0, "params": 1, "latency_ms": {},
              "baseline_latency_ms": {}, "train_seconds": 60, "wall_time_total_s": 60, "git": {"commit": "abc", "dirty": False}, "schedule_settings": settings}
    rs = [{**common, "run": "baseline", "method": "baseline", "macs": 100, "macs_ratio": 1.0, "accuracy": 80.0,
           "machine": old},
          {**common, "run": "baseline-extended", "method": "baseline-extended", "macs": 100, "macs_ratio": 1.0,
           "accuracy": 82.0, "machine": new}]
    text = report.section(rs, tmp_path / "RESULTS.md")
    assert "Machines: AMD EPYC (2 cores, AVX2, shared)" in text and "; AMD EPYC (2 cores, shared)" in text


def test_pruning_matches_an_lwdc_point_that_is_still_fine_tuning(tmp_path, capsys):
    """Long schedules: the pruning run need not wait hours for the LWDC fine-tune; the finished search fixes the
    derived network and so its MACs."""
    pytest.importorskip("torch_pruning")
    lw = run(tmp_path, "--method", "lwdc", "--lam", "2", "--ops", "minimal")
    run_dir = next((tmp_path / "runs").iterdir()) / lw["run"]
    (run_dir / "result.json").unlink()
    (run_dir / "checkpoints" / "finetune.pt").unlink()           # as if killed during the fine-tune
    capsys.readouterr()
    pr = run(tmp_path, "--method", "prune-l1-global", "--lam", "2", "--ops", "minimal")
    assert pr["target_macs"] == lw["macs"] and pr["target_from"] == "search"
    assert pr["matches"] == "lwdc-minimal-lam2-noise0.25"
    assert "matching the finished search of lwdc-minimal-lam2-noise0.25" in capsys.readouterr().out


def test_search_cost_leaves_out_memory_of_a_process_that_did_not_search():
    """A run resumed after its search finished (in an earlier session) reports the fine-tuning process's memory:
    the search-cost table must not present it as the search's."""
    memory = {"peak_rss_mb": 1100.0, "rss_before_training_mb": 400.0}
    plain = {"memory": {"peak_rss_mb": 1000.0, "rss_before_training_mb": 400.0}, "epoch_seconds": 200.0}
    searched = _result("lwdc-default-lam1.5", "lwdc", 36.0, 79.0, memory=memory, search_epoch_seconds=260.0,
                       wall_time_s={"warmup": 60.0, "search": 520.0, "finetune": 900.0})
    resumed = _result("lwdc-default-lam2", "lwdc", 30.0, 78.0, memory=memory, search_epoch_seconds=250.0,
                      wall_time_s={"warmup": 0.0001, "search": 0.04, "finetune": 2000.0}, **{"lambda": 2.0})
    rows = report.cost_table([searched, resumed], plain)[2:]
    assert rows[0].split(" | ")[4:7] == ["1100", "1000", "1.10"]          # searched here: memory compared
    assert rows[1].split(" | ")[4:8] == ["-", "-", "-", "-"]              # not searched here: no memory claim
    assert "search in an earlier process / 33.3" in rows[1] and "1.25" in rows[1]   # time ratio from its history
