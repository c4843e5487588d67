"""Smoke test of the CIFAR benchmark harness: every stage for a few batches, on the shipped subset.

Keeps `bench.cifar`, `bench.pruning` and `bench.report` working without the full data set or ../shared.
"""
from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/ is not installed: import it from the checkout
cifar = pytest.importorskip("bench.cifar")
report = pytest.importorskip("bench.report")
remeasure = pytest.importorskip("bench.remeasure")
layer_macs = pytest.importorskip("bench.layer_macs")

GROUP = "resnet8_smoke_s{}_w0.25_mb2"       # the cache folder of the smoke runs of a seed
STEM = "resnet8_smoke_w0.25_mb2_{}_s{}"      # the result file of a run and seed


def run(tmp_path, *args, schedule="smoke", out=None):
    return cifar.main(["--model", "resnet8", "--width", "0.25", "--schedule", schedule, "--data", "cifar10-subset",
                       "--max-batches", "2", "--cache-dir", str(tmp_path / "runs"),
                       "--out-dir", str(out or tmp_path / "out"), "--no-onnx", "--quick-latency", *args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A baseline and one LWDC point of seed 0, trained once for the tests that build on them (each test copies
    their results into its own results folder by running them again: a finished run is only read)."""
    pytest.importorskip("torch_pruning")
    root = tmp_path_factory.mktemp("bench")
    return root, run(root, "--method", "baseline"), run(root, "--method", "lwdc", "--lam", "2", "--ops", "minimal")


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


def test_group_sparse_pruning_over_two_seeds_is_remeasured_and_reported(trained, tmp_path):
    """prune-group-sparse at an LWDC point's MACs; a second seed of both from the seed-0 baseline; every model timed
    again in one process; the report shows mean (seed 0 / seed 1) and prefers the re-measured latencies."""
    root, base, lw = trained
    out = tmp_path / "out"
    for args in (["--method", "baseline"], ["--method", "lwdc", "--lam", "2", "--ops", "minimal"]):
        run(root, *args, out=out)
    point = ["--lam", "2", "--ops", "minimal"]
    gs = run(root, "--method", "prune-group-sparse", *point, out=out)
    lw1 = run(root, "--method", "lwdc", *point, "--seed", "1", out=out)
    gs1 = run(root, "--method", "prune-group-sparse", *point, "--seed", "1", out=out)

    settings = gs["schedule_settings"]
    assert gs["epochs"] == {"sparse": settings["sparse_epochs"], "finetune": settings["post_epochs"] - 2} == \
        {"sparse": 2, "finetune": 1}                                  # the same budget as every other method
    assert gs["global_pruning"] and "group L2 norm" in gs["importance"] and len(gs["sparse_history"]) == 2
    assert gs["matches"] == lw["run"] and gs["target_macs"] == lw["macs"]
    # seed 1 starts from the seed-0 baseline (no second one is trained) and matches its own seed's LWDC point
    assert (lw1["seed"], lw1["baseline_seed"], lw1["baseline_accuracy"]) == (1, 0, base["accuracy"])
    assert gs1["baseline_run"] == f"{GROUP.format(0)}/baseline" and gs1["target_macs"] == lw1["macs"]
    assert not (root / "runs" / GROUP.format(1) / "baseline").exists()
    assert (root / "runs" / GROUP.format(1) / gs1["run"] / "model_state.pt").is_file()   # kept for bench.remeasure

    lat = remeasure.remeasure(out, root / "runs", "smoke", rounds=2, onnx=False, log=lambda _: None)
    assert set(lat["models"]) == {p.stem for p in out.glob("*.json")} and not lat["skipped"]
    entry = lat["models"][STEM.format(gs1["run"], 1)]
    assert entry["baseline"] == STEM.format("baseline", 0) and len(entry["eager_b1"]["rounds"]) == 2
    assert (tmp_path / "latency_smoke.json").is_file()

    doc = tmp_path / "docs" / "RESULTS.md"
    report.main(["--results", str(out), "--doc", str(doc)])
    text = doc.read_text()
    mean = statistics.mean([gs["accuracy"], gs1["accuracy"]])
    assert "### resnet8, schedule `smoke`, seeds 0, 1" in text
    assert (f"| prune-group-sparse | → minimal λ=2, noise→0.25 | {mean:.2f} ({gs['accuracy']:.2f} / "
            f"{gs1['accuracy']:.2f}) |") in text
    assert "Against the most accurate Torch-Pruning run matched within 5% MACs" in text
    assert "of 5 runs were re-measured by `python -m bench.remeasure`" in text
    # the original's time: the fastest round of the baseline and of its identical baseline-extended twin
    base_ms = min(x for m in lat["models"].values() if m["baseline"] == STEM.format("baseline", 0)
                  and m["method"] in ("baseline", "baseline-extended") for x in m["eager_b1"]["rounds"])
    assert f"| baseline |  | {base['accuracy']:.2f} | - | 5,214 | 0.86 | 1.000 | {base_ms:.2f} |" in text

    # where each model spends its MACs, counted by torch's FlopCounterMode layer by layer: the layers add up to the
    # run's own (closed-form) count, and LWDC's choices show in them
    layers = layer_macs.collect(out, root / "runs", "smoke", log=lambda _: None)
    assert (tmp_path / "layers_smoke.json").is_file() and not layers["skipped"]
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(layers["models"]) == set(results)
    for stem, entry in layers["models"].items():
        assert entry["total"] == sum(entry["layers"].values()) == results[stem]["macs"], stem
    # the gates as the search left them, one probability per candidate: the choices are their argmax
    gates = lw["final_probabilities"]
    assert set(gates) == set(lw["choices"]) and all(abs(sum(p) - 1) < 1e-3 for p in gates.values())
    original = layers["models"][STEM.format("baseline", 0)]["layers"]
    mine = layers["models"][STEM.format(lw["run"], 0)]["layers"]
    for name, op in lw["choices"].items():
        if op == "original":
            assert mine[name] == original[name], name
        elif op == "skip":
            assert mine[name] == 0, name
        else:
            assert 0 < mine[name] < original[name], (name, op)
    report.main(["--results", str(out), "--doc", str(doc)])
    text = doc.read_text()
    assert "Where the MACs went (`python -m bench.layer_macs`" in text
    first = next(n for n in lw["choices"] if original[n])
    assert re.search(rf"\| {re.escape(first)} \| [\d,]+ \| {lw['choices'][first]} "
                     rf"{mine[first] / original[first]:.2f} \| ", text)


def test_latency_cost_point_is_named_apart_and_plotted_against_latency(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("LWDC_CACHE_DIR", str(tmp_path / "lwdc"))       # the latency table's cache
    root, _, lw = trained
    out = tmp_path / "out"
    for args in (["--method", "baseline"], ["--method", "lwdc", "--lam", "2", "--ops", "minimal"]):
        run(root, *args, out=out)
    lat = run(root, "--method", "lwdc", "--lam", "4", "--ops", "minimal", "--cost", "latency:onnxruntime", out=out)
    assert lat["run"] == "lwdc-minimal-lam4-noise0.25-latency_onnxruntime" and lat["cost"] == "latency:onnxruntime"
    assert lw["run"] == "lwdc-minimal-lam2-noise0.25" and lw["cost"] == "macs"    # MACs runs keep their names
    assert list((tmp_path / "lwdc" / "latency").glob("onnxruntime-*.json"))      # the table is cached

    remeasure.main(["--schedule", "smoke", "--rounds", "1", "--results", str(out), "--cache-dir", str(root / "runs")])
    doc = tmp_path / "docs" / "RESULTS.md"
    report.main(["--results", str(out), "--doc", str(doc)])
    text = doc.read_text()
    assert "| lwdc-minimal-noise0.25-latency_onnxruntime | minimal λ=4, noise→0.25, cost latency:onnxruntime |" in text
    assert "![accuracy vs onnxruntime latency](latency_resnet8_smoke_mb2.png)" in text
    assert (doc.parent / "latency_resnet8_smoke_mb2.png").is_file()
    assert re.search(r"Verdict: (no verdict: the fronts do not overlap|the fronts cross|the `[^`]+`-cost front is "
                     r"ahead)", text)


def test_remeasure_rebuilds_a_baseline_that_predates_saved_models(trained, tmp_path):
    """Runs finished before bench.cifar saved models: the baseline comes back from its checkpoint."""
    root, base, _ = trained
    shutil.copytree(root / "runs" / GROUP.format(0) / "baseline", tmp_path / GROUP.format(0) / "baseline")
    (tmp_path / GROUP.format(0) / "baseline" / "model_state.pt").unlink()
    model, source = remeasure.load_model(base, tmp_path)
    saved, _ = remeasure.load_model(base, root / "runs")
    assert source == "baseline checkpoint"
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in model.state_dict().items())


def test_an_lwdc_run_whose_folder_was_lost_is_rebuilt_from_its_choices(trained, tmp_path):
    """A result carried without its run folder: its network comes back from the baseline and its choices, with the
    layers and MACs of the saved model (the weights are not its fine-tuned ones, so only shapes and time count)."""
    from lwdc.profiling import count_macs

    root, base, lw = trained
    shutil.copytree(root / "runs" / GROUP.format(0) / "baseline", tmp_path / GROUP.format(0) / "baseline")
    model, source = remeasure.load_model(lw, tmp_path)
    saved, _ = remeasure.load_model(lw, root / "runs")
    assert source == "architecture from its recorded choices (baseline weights)"
    x = torch.zeros(1, *remeasure.INPUT_SHAPE)
    assert count_macs(model, x) == count_macs(saved, x) == lw["macs"]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in saved.state_dict().items()}


def test_a_second_seed_waits_for_the_shared_baseline(tmp_path):
    with pytest.raises(SystemExit, match="run --method baseline --seed 0 first"):
        run(tmp_path, "--method", "baseline-extended", "--seed", "1", "--max-batches", "1")


@pytest.mark.parametrize("argv, message", [
    (["--method", "baseline", "--cost", "latency:onnxruntime"], "--cost applies to --method lwdc"),
    (["--method", "lwdc", "--lam", "1", "--cost", "flops:x"], "--cost flops:x"),
    (["--method", "baseline", "--seed", "1", "--baseline-seed", "0"], "--method baseline trains the baseline"),
])
def test_bad_seed_and_cost_options_name_the_problem(argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        cifar.parse(argv)


def test_int8_measurement_follows_the_budgets_as_lwdc_parses_them():
    """A flash or RAM budget, however spaced, asks for the int8 C; a MACs budget does not; a malformed budget is
    refused when the command is read, before any baseline loads."""
    wants = lambda *budgets: cifar._wants_int8(cifar.parse(  # noqa: E731
        ["--method", "lwdc", *[x for b in budgets for x in ("--budget", b)]]))
    assert wants(" flash = 75000") and wants("macs=0.5x", "ram=64KiB")
    assert not wants("macs=0.5x") and not wants("params=0.3x")
    with pytest.raises(SystemExit, match=re.escape("--budget: target 'flash75000': write COST=VALUE")):
        cifar.parse(["--method", "lwdc", "--budget", "flash75000"])
    with pytest.raises(SystemExit, match="one budget per cost"):
        cifar.parse(["--method", "lwdc", "--budget", "flash=1000", "--budget", "flash=2000"])


def test_a_budgeted_lwdc_point_keeps_its_budgets_and_names_them(trained):
    """uNAS-style limits (flash and peak RAM, int8) on one LWDC run: lambda 0, the budgets in the run's name and
    result, each met as the exporter and the memory planner count it."""
    root, base, _ = trained
    flash = int(0.6 * cifar_flash(root))
    r = run(root, "--method", "lwdc", "--ops", "minimal", "--budget", f"flash={flash}", "--budget", "ram=100KiB")
    assert r["run"] == f"lwdc-minimal-lam0-noise0.25-flash{flash}-ram100KiB" and r["lambda"] == 0.0
    rows = {b["cost"]: b for b in r["budgets"]}
    assert set(rows) == {"flash", "ram"} and all(b["met"] for b in rows.values())
    assert rows["ram"]["measured_by"] == "memory planner" and rows["flash"]["achieved"] <= flash
    # sized at int8, so measured as the int8 C too: what the exporter writes fits the same limits
    c = r["int8_c"]
    assert c["flash_bytes"] <= flash and c["peak_ram_bytes"] <= 100 * 1024 and 0 <= c["int8_c_accuracy"] <= 100
    assert c["calibration_samples"] == cifar.CALIBRATION_SAMPLES
    # a finished result that predates the measurement gets it on the next run, the same figures
    folder = root / "runs" / GROUP.format(0) / r["run"]
    stored = json.loads((folder / "result.json").read_text())
    del stored["int8_c"]
    (folder / "result.json").write_text(json.dumps(stored))
    again = run(root, "--method", "lwdc", "--ops", "minimal", "--budget", f"flash={flash}", "--budget", "ram=100KiB")
    assert again["int8_c"]["flash_bytes"] == c["flash_bytes"]
    assert again["int8_c"]["int8_c_accuracy"] == c["int8_c_accuracy"]
    assert "int8_c" in json.loads((folder / "result.json").read_text())
    with pytest.raises(SystemExit, match="--budget applies to --method lwdc"):
        run(root, "--method", "prune-l1-global", "--lam", "2", "--budget", "flash=1000")


def cifar_flash(root) -> int:
    """The int8 flash bytes of the smoke baseline, from its cached model."""
    from lwdc.costs.flash import flash_bytes
    from lwdc.models import create_model
    return flash_bytes(create_model("resnet8", num_classes=10, width=0.25))


def test_random_draws_match_the_point_and_start_from_its_trained_supernet(trained):
    """Issue 26: a draw is uniform per layer, kept within 3% of the point's MACs, derived from the point's own
    search checkpoint (one-hot gates) and fine-tuned like the point; draws differ and are reproducible."""
    root, base, lw = trained
    first = run(root, "--method", "random", "--lam", "2", "--ops", "minimal", "--draw", "0")
    second = run(root, "--method", "random", "--lam", "2", "--ops", "minimal", "--draw", "1")
    for r, k in ((first, 0), (second, 1)):
        assert r["run"] == f"random-minimal-lam2-noise0.25-d{k}" and r["method"] == "random"
        assert abs(r["macs"] / lw["macs"] - 1) <= 0.03 + 1e-9          # the independent counter agrees
        assert r["random_draw"]["point"] == lw["run"] and r["choices"] == r["random_draw"]["choices"]
        assert r["baseline_accuracy"] == base["accuracy"]
    assert run(root, "--method", "random", "--lam", "2", "--ops", "minimal", "--draw", "0") == first
    with pytest.raises(SystemExit, match="--method random needs --lam"):
        run(root, "--method", "random")


def test_a_draw_from_the_warmed_up_original_has_the_draw_s_operators_and_no_search(trained):
    """Issue 26's second start: draw k from the uncompressed model after the branch warm-up picks the operators of
    draw k from the supernet, starts from the warm-up's weights (not the searched ones), and one warm-up serves
    every draw of the point."""
    from lwdc.runs import load_checkpoint
    root, _, lw = trained
    from_supernet = run(root, "--method", "random", "--lam", "2", "--ops", "minimal", "--draw", "0")
    warm = run(root, "--method", "random", "--lam", "2", "--ops", "minimal", "--draw", "0", "--start", "warmup")
    assert warm["run"] == "random-minimal-lam2-noise0.25-from_warmup-d0"
    assert warm["random_draw"]["start"] == "warmup" and warm["choices"] == from_supernet["choices"]
    folder = root / "runs" / GROUP.format(0)
    warmed = folder / lw["run"] / "checkpoints" / "warmed_supernet.pt"
    start = load_checkpoint(folder / warm["run"] / "checkpoints" / "search.pt", "search")["model"]
    searched = load_checkpoint(folder / lw["run"] / "checkpoints" / "search.pt", "search")["model"]
    kept = load_checkpoint(warmed, "warmed_supernet")["model"]
    weights = [k for k in start if not k.endswith("alpha")]
    assert all(torch.equal(start[k], kept[k]) for k in weights)
    assert any(not torch.equal(start[k], searched[k]) for k in weights)     # the search moved them
    stamp = warmed.stat().st_mtime_ns
    again = run(root, "--method", "random", "--lam", "2", "--ops", "minimal", "--draw", "1", "--start", "warmup")
    assert warmed.stat().st_mtime_ns == stamp and again["random_draw"]["start"] == "warmup"
    with pytest.raises(SystemExit, match="--start applies to --method random"):
        run(root, "--method", "lwdc", "--lam", "2", "--start", "warmup")


def test_a_uniform_draw_that_cannot_reach_the_point_is_refused():
    from bench.random_arch import draw_matched
    from lwdc.costs.base import CostTable
    table = CostTable("macs", "MACs", {"a": torch.tensor([10.0, 5.0]), "b": torch.tensor([10.0, 5.0])}, 0.0, 20.0)
    choices, ratio, tries = draw_matched(table, {"a": ["original", "half"], "b": ["original", "half"]}, 0.75, seed=3)
    assert ratio == 0.75 and sorted(choices.values()) == ["half", "original"] and tries >= 1
    with pytest.raises(SystemExit, match="no uniform draw within 3%"):
        draw_matched(table, {"a": ["original", "half"], "b": ["original", "half"]}, 0.6, seed=0)


def test_ablations_switch_off_one_part_of_the_search_each(trained):
    """Issue 26's ablations: each run is named apart and really runs without that part (no warm-up error recorded,
    uniform starting gates, noise held at 1)."""
    root, _, lw = trained
    r = run(root, "--method", "lwdc", "--lam", "2", "--ops", "minimal", "--ablate", "no-warmup",
            "--ablate", "uniform-gates")
    assert r["run"] == "lwdc-minimal-lam2-noise0.25-abl_no-warmup-abl_uniform-gates"
    assert r["ablations"] == ["no-warmup", "uniform-gates"] and r["wall_time_s"]["warmup"] < lw["wall_time_s"]["warmup"]
    from bench.runners import lwdc_config
    from types import SimpleNamespace
    ctx = SimpleNamespace(schedule=cifar.SCHEDULES["smoke"], args=cifar.parse(
        ["--method", "lwdc", "--lam", "2", "--ablate", "constant-noise", "--ablate", "uniform-gates",
         "--ablate", "no-warmup"]))
    config = lwdc_config(ctx)
    assert (config.noise_end, config.original_prob, config.warmup_epochs) == (1.0, None, 0.0)
    with pytest.raises(SystemExit, match="--ablate and --variant apply to --method lwdc"):
        run(root, "--method", "prune-l1-global", "--lam", "2", "--ablate", "no-warmup")
    variant = SimpleNamespace(schedule=cifar.SCHEDULES["smoke"], args=cifar.parse(
        ["--method", "lwdc", "--budget", "flash=75000", "--variant", "fill-limits", "--variant", "ramp0.5"]))
    config = lwdc_config(variant)
    assert (config.fill_limits, config.budget_ramp) == (True, 0.5)
    assert cifar.run_name("lwdc", 0.0, "default", None, budgets=["flash=75000"], variants=["ramp0.5", "fill-limits"]) \
        == "lwdc-default-lam0-flash75000-fill-limits-ramp0.5"


def test_lambda_sweep_fronts_leave_out_budgeted_and_ablated_runs():
    """The latency-vs-MACs fronts compare lambda sweeps: a flash/RAM-budgeted run (lambda 0, sized by its limits),
    an ablation, a longer or a distilled fine-tune is not a point of either sweep (the converged report once put the uNAS
    budget runs on the MACs-cost front)."""
    from bench.report_latency import sweep_point
    plain = {"method": "lwdc", "lambda": 0.6, "cost": "macs"}
    assert sweep_point(plain) and sweep_point({**plain, "budgets": []})
    assert not sweep_point({**plain, "budgets": [{"cost": "flash", "limit": 75000}]})
    assert not sweep_point({**plain, "ablations": ["no-warmup"]})
    assert not sweep_point({**plain, "finetune_override": 20})
    assert not sweep_point({**plain, "method": "random"})
    assert not sweep_point({**plain, "distill": 1.0}) and sweep_point({**plain, "distill": 0.0})


def test_front_verdict_compares_fronts_only_where_they_overlap():
    """Issue 21's verdict on the cost fronts: each front point against the other front read off between its
    neighbours (accuracy at the same latency, time for the same accuracy); ahead only when never behind."""
    from bench.report_latency import front_verdict
    macs = [(0.234, 83.80, {}), (0.442, 86.56, {})]
    # the converged sweeps of 2026-12-05: each front ahead somewhere, so they cross
    text = front_verdict(("MACs", macs), ("latency", [(0.110, 72.91, {}), (0.366, 86.33, {})]))
    assert text.startswith("the fronts cross")
    # latency front at 0.366 ms: MACs front there 83.80 + 2.76 * 0.132 / 0.208 = 85.55, so +0.78 points; the MACs
    # front needs 0.234 + 0.208 * 2.53 / 2.76 = 0.425 ms for 86.33%, so -14% time
    assert "latency point at 0.366 ms, 86.33%: +0.78 points at the same latency, -14% time" in text
    assert "MACs point at 0.234 ms, 83.80%: +4.39 points at the same latency, -26% time" in text
    ahead = front_verdict(("MACs", macs), ("latency", [(0.30, 86.0, {}), (0.45, 87.0, {}), (0.40, 85.0, {})]))
    assert ahead.startswith("the latency front is ahead") and "0.400 ms" not in ahead   # off its own front
    assert front_verdict(("MACs", macs), ("latency", [(0.20, 80.0, {}), (0.50, 82.0, {})])).startswith(
        "the MACs front is ahead")
    apart = front_verdict(("LWDC", macs), ("pruning", [(0.464, 84.21, {}), (0.724, 87.09, {})]))
    assert apart.startswith("no verdict: the fronts do not overlap")
    # only an outright win is reported across the gap: 0.442 ms at 86.56% beats 0.464 ms at 84.21%
    assert apart.endswith("outright: LWDC point at 0.442 ms, 86.56% beats the pruning point at 0.464 ms, 84.21%")



def test_latency_fronts_put_pruning_beside_the_lwdc_sweeps(tmp_path):
    """The latency plot's verdicts: MACs-cost against latency-cost sweep, then every cost's sweep together against
    each plain pruning method, on the same measured onnxruntime times (distilled runs stay out)."""
    from bench.report_latency import latency_fronts
    def rec(method, ms, acc, cost="macs", **extra):
        return {"method": method, "ops": "default", "noise_end": 0.25, "cost": cost, "accuracy": acc,
                "latency_ms": {"ort_b1": ms}, "lambda": 1.0, **extra}
    rs = [rec("lwdc", 0.234, 83.8), rec("lwdc", 0.442, 86.56), rec("lwdc", 0.366, 86.33, "latency:onnxruntime"),
          rec("prune-l1-global", 0.464, 84.21), rec("prune-l1-global", 0.724, 87.09),
          rec("prune-l1-global", 0.3, 99.0, distill=1.0), rec("baseline", 0.72, 87.9)]
    text = "\n".join(latency_fronts(rs, tmp_path / "lat.png", "t", lambda r: "p"))
    assert (tmp_path / "lat.png").is_file()
    assert "Verdict: the `latency:onnxruntime`-cost front is ahead" in text
    line = next(l for l in text.splitlines() if "against `prune-l1-global`" in l)
    assert "no verdict: the fronts do not overlap in latency (LWDC `default` 0.234-0.442 ms" in line
    assert "LWDC `default` point at 0.366 ms, 86.33% beats the `prune-l1-global` point at 0.464 ms" in line
    assert "99.00" not in text
    kd = [rec("lwdc", 0.442, 87.17, distill=1.0), rec("lwdc", 0.6, 87.5, distill=1.0, ablations=["no-warmup"])]
    text = "\n".join(latency_fronts(rs + kd, tmp_path / "lat.png", "t", lambda r: "p"))
    line = next(l for l in text.splitlines() if l.startswith("- Distilled fine-tuning (weight 1)"))
    # the distilled pruning run (0.3 ms, 99%) against the distilled LWDC point; the ablation stays out
    assert line.endswith("against `prune-l1-global`: no verdict: the fronts do not overlap in latency (LWDC "
                         "0.442-0.442 ms; `prune-l1-global` 0.300-0.300 ms); outright: `prune-l1-global` point at "
                         "0.300 ms, 99.00% beats the LWDC point at 0.442 ms, 87.17%.") and "0.600" not in line


def test_unas_table_scores_the_int8_c_against_unas_error(tmp_path):
    """The uNAS rows: only runs held to both of uNAS's limits, the int8 C's error beside uNAS's 0.18, and the
    verdict from the best int8 C (a float accuracy alone never meets it)."""
    from bench import report_targets
    (tmp_path / "cifar").mkdir()
    budgets = [{"cost": "flash", "limit": 75000.0}, {"cost": "ram", "limit": 75000.0}]
    point = {"method": "lwdc", "ops": "default", "run": "lwdc-default-lam0-flash75000-ram75000-fill-limits-ramp0.5",
             "variants": ["fill-limits"], "accuracy": 83.0, "macs_ratio": 0.3, "budgets": budgets, "choices": {"a": "skip", "b": "skip", "c": "sep3x3"}}
    (tmp_path / "cifar" / "a.json").write_text(json.dumps(point))
    (tmp_path / "cifar" / "b.json").write_text(json.dumps({**point, "budgets": budgets[:1], "accuracy": 99.0}))
    lines = "\n".join(report_targets.unas_lines(tmp_path))
    assert "| default | fill-limits | 83.00% | not measured | - | - | - | 0.300x | skip x2, sep3x3 x1 |" in lines
    assert "99.00%" not in lines and "misses uNAS's 0.18" in lines
    (tmp_path / "cifar" / "a.json").write_text(json.dumps(
        {**point, "int8_c": {"int8_c_accuracy": 82.4, "flash_bytes": 74000, "peak_ram_bytes": 58368}}))
    lines = "\n".join(report_targets.unas_lines(tmp_path))
    assert "| 82.40% | 0.176 | 74,000 | 58,368 |" in lines and "meets uNAS's 0.18" in lines


def test_targets_table_names_the_signal_that_sized_each_run(tmp_path):
    """A run from before ``budget_signal`` ran the expected law and reads so; a new one names its signal and any
    non-default gate optimiser or ramp."""
    from bench import report_targets
    run = {"target": "macs=0.5x", "seed": 0, "search_argmax_ratio": [1.0, 0.493], "repaired_layers": [],
           "filled_layers": [], "limit_ratio": 0.5, "achieved_ratio": 0.493, "met": True, "macs_ratio": 0.493,
           "accuracy": 69.4}
    runs = [run, {**run, "budget_signal": "argmax", "gate_optimizer": "adam", "budget_ramp": 0.0},
            {**run, "budget_signal": "argmax", "gate_optimizer": "shared-adam", "budget_ramp": 0.5}]
    (tmp_path / "targets_x.json").write_text(json.dumps({"baseline": {"accuracy": 71.4}, "runs": runs}))
    rows = [line for line in report_targets.section(tmp_path).splitlines() if line.startswith("| macs=0.5x")]
    assert [row.split(" | ")[1] for row in rows] == ["expected", "argmax", "argmax, shared-adam, ramp 0.5"]
    assert rows[1] == ("| macs=0.5x | argmax | 0 | 0.493x of a 0.500x limit (met) | 0.493x | 0 / 0 | 69.40% "
                       "(baseline 71.40%), MACs 0.493x | targets_x.json |")


def test_random_and_ablation_tables_read_draws_and_seeds():
    """Issue 26's CIFAR tables: draws grouped by point, seed and matched cost with mean, spread, best and a
    verdict; ablations beside the full search of the same point, one column per seed."""
    from bench.report_random import ablation_lines, front_at, random_lines, verdict
    assert verdict(86.5, [80.0, 82.0, 86.1]).startswith("search ahead of every draw (+0.40 over the best")
    assert verdict(88.0, [80.0, 80.0, 80.0, 90.0]).startswith("search ahead of the draws' mean by more than their")
    assert verdict(84.0, [80.0, 81.0, 86.0]).startswith("random matches the search")
    assert verdict(80.0, [80.0, 81.0, 86.0]).startswith("random beats the search")
    point = {"method": "lwdc", "run": "lwdc-default-lam0.6", "seed": 0, "lambda": 0.6, "ops": "default",
             "cost": "macs", "noise_end": 0.25, "accuracy": 86.5, "macs_ratio": 0.57, "latency_ms": {"ort_b1": 0.5},
             "baseline_latency_ms": {"ort_b1": 1.0}}
    draws = [{"method": "random", "seed": 0, "accuracy": a, "latency_ms": {"ort_b1": ms},
              "baseline_latency_ms": {"ort_b1": 2.0},
              "random_draw": {"point": "lwdc-default-lam0.6", "match": match}}
             for a, ms, match in [(80.0, 0.7, "macs"), (82.0, 0.8, "macs"), (85.0, 0.45, "latency:onnxruntime"),
                                  (87.0, 0.55, "latency:onnxruntime")]]
    ablated = [{**point, "run": "x", "seed": s, "ablations": ["no-warmup"], "accuracy": a, "macs_ratio": m}
               for s, a, m in [(0, 85.0, 0.43), (1, 84.0, 0.57)]]
    # seed 0 also swept lambda 1.6 (0.29x): its front at the ablation's 0.43x is 83.8 + 2.7 / 2 = 85.15
    far = {**point, "run": "lwdc-default-lam1.6", "lambda": 1.6, "accuracy": 83.8, "macs_ratio": 0.29}
    text = "\n".join(random_lines([point, *draws]) + ablation_lines([point, {**point, "seed": 1, "accuracy": 86.0},
                                                                         far, *ablated]))
    # latency as a fraction of the original timed in the same process: the draws ran under another load
    assert "| lwdc-default-lam0.6 | 0 | macs | supernet | 86.50 | 2 | 81.00 ± 1.41 | 80.00-82.00 | 82.00 | 0.500x | " \
           "0.375x (0.350-0.400) | search ahead of every draw" in text
    assert "| lwdc-default-lam0.6 | 0 | latency:onnxruntime | supernet | 86.50 | 2 | 86.00 ± 1.41 |" in text
    warm = [{**d, "accuracy": 70.0, "random_draw": {**d["random_draw"], "start": "warmup", "draw": 0}}
            for d in draws[:1]]
    paired = [{**draws[0], "random_draw": {**draws[0]["random_draw"], "draw": 0}}, *draws[1:]]
    both = "\n".join(random_lines([point, *warm, *paired]))
    assert "| lwdc-default-lam0.6 | 0 | macs | warmup | 86.50 | 1 | 70.00 |" in both
    # draw 0 from both starts, paired: 70.00 against 80.00
    assert ("- lwdc-default-lam0.6, seed 0, matched on macs: the same 1 draw(s) from the `warmup` start against the "
            "supernet: draw 0 70.00 vs 80.00; mean difference -10.00 points.") in both
    assert "| full search | 86.50 (0.570x) | 86.00 (0.570x) | 86.25 | - | - |" in text
    # against its own point -1.75; against the front at the cost it reached, seed 0 only (seed 1 swept one lambda)
    assert "| no-warmup | 85.00 (0.430x) | 84.00 (0.570x) | 84.50 | -1.75 | -0.15 (1 of 2 seeds) |" in text
    assert front_at([point, far], 0.57) == 86.5 and front_at([point, far], 0.6) is None and front_at([point], 0.57) is None


def test_a_run_is_named_by_what_sets_it_apart_from_its_point():
    """The results table's point column: an ablation, a budget, a variant or a random draw at lambda 0.6 must not
    read as a second plain lambda-0.6 point."""
    from bench.report_format import point
    plain = {"method": "lwdc", "ops": "default", "lambda": 0.6, "noise_end": 0.25, "cost": "macs"}
    assert point(plain) == "default λ=0.6, noise→0.25"
    assert point({**plain, "ablations": ["no-warmup"]}) == "default λ=0.6, noise→0.25, ablated: no-warmup"
    budgeted = {**plain, "lambda": 0.0, "variants": ["fill-limits", "ramp0.5"],
                "budgets": [{"budget": "macs=0.5x", "cost": "macs", "limit": 2.04e7}, {"cost": "ram", "limit": 75000.0}]}
    assert point(budgeted) == "default λ=0, noise→0.25, budgets macs=0.5x ram=75000, fill-limits+ramp0.5"
    draw = {"method": "random", "matches": "lwdc-default-lam0.6-noise0.25", "noise_end": 0.25, "cost": "macs",
            "random_draw": {"draw": 3, "match": "latency:onnxruntime"}}
    assert point(draw) == "→ default λ=0.6, noise→0.25, random draw 3 matched on latency:onnxruntime"


def test_distilled_runs_share_their_point_s_search_and_pair_only_with_distilled_pruning(trained):
    """--distill: the LWDC run fine-tunes the point's own finished search with the baseline as teacher, the pruning
    run matched to it is distilled the same way, and the report pairs distilled with distilled only."""
    from bench.report_compare import matched_pairs
    from bench.report_format import point
    root, _, lw = trained
    kd = run(root, "--method", "lwdc", "--lam", "2", "--ops", "minimal", "--distill", "1")
    assert kd["run"] == "lwdc-minimal-lam2-noise0.25-kd1" and kd["distill"] == 1.0
    assert kd["search_reused_from"].endswith("/lwdc-minimal-lam2-noise0.25")
    assert kd["choices"] == lw["choices"] and kd["search_history"] == lw["search_history"]
    assert kd["search_of"] == "lwdc-minimal-lam2-noise0.25-kd1"
    assert point(kd) == "minimal λ=2, noise→0.25, distilled from the baseline (weight 1)"
    plain = run(root, "--method", "prune-l1-global", "--lam", "2", "--ops", "minimal")
    pruned = run(root, "--method", "prune-l1-global", "--lam", "2", "--ops", "minimal", "--distill", "1")
    assert pruned["run"] == "prune-l1-global-minimal-lam2-noise0.25-kd1" and pruned["distill"] == 1.0
    assert pruned["matches"] == "lwdc-minimal-lam2-noise0.25-kd1" and pruned["target_macs"] == lw["macs"]
    assert plain["distill"] == 0.0 and plain["matches"] == "lwdc-minimal-lam2-noise0.25"
    assert point(pruned) == "→ minimal λ=2, noise→0.25, distilled from the baseline (weight 1)"
    _, pairs = matched_pairs([lw, kd, plain, pruned])
    assert sorted((a["run"], b["run"]) for a, b, _ in pairs) == [
        ("lwdc-minimal-lam2-noise0.25", "prune-l1-global-minimal-lam2-noise0.25"),
        ("lwdc-minimal-lam2-noise0.25-kd1", "prune-l1-global-minimal-lam2-noise0.25-kd1")]
    # without its distilled twin, a distilled point is not paired with a plain pruning run at the same MACs
    _, pairs = matched_pairs([kd, plain])
    assert pairs == []
    # the other way round: a seed whose distilled run searched first gives its plain run that search, so the two
    # fine-tune one architecture (and the search is not paid twice). Seed 2: no other test of the shared folder runs
    # it, so its plain run cannot have searched first (seed 1's does, in the group-sparse test)
    kd1 = run(root, "--method", "lwdc", "--lam", "2", "--ops", "minimal", "--distill", "1", "--seed", "2")
    assert kd1["search_reused_from"] is None
    plain1 = run(root, "--method", "lwdc", "--lam", "2", "--ops", "minimal", "--seed", "2")
    assert plain1["search_reused_from"] == f"{GROUP.format(2)}/lwdc-minimal-lam2-noise0.25-kd1"
    assert plain1["choices"] == kd1["choices"] and plain1["search_history"] == kd1["search_history"]
    assert plain1["run"] == "lwdc-minimal-lam2-noise0.25" and plain1["distill"] == 0.0


def test_a_distilled_search_is_a_variant_of_the_distilled_point(trained):
    """--variant distill-search searches again (the plain point's search does not fit its fingerprint) and is
    compared with the distilled pruning run of its point."""
    from bench.runners import lwdc_config
    from types import SimpleNamespace
    root, _, lw = trained
    r = run(root, "--method", "lwdc", "--lam", "2", "--ops", "minimal", "--distill", "1", "--variant", "distill-search")
    assert r["run"] == "lwdc-minimal-lam2-noise0.25-distill-search-kd1" and r["search_reused_from"] is None
    assert r["search_of"] == "lwdc-minimal-lam2-noise0.25-kd1" and r["variants"] == ["distill-search"]
    assert r["search_history"] != lw["search_history"]
    ctx = SimpleNamespace(schedule=cifar.SCHEDULES["smoke"], args=cifar.parse(
        ["--method", "lwdc", "--lam", "2", "--distill", "1", "--variant", "distill-search"]))
    config = lwdc_config(ctx)
    assert (config.distill, config.distill_search) == (1.0, True)
    with pytest.raises(SystemExit, match="add --distill 1"):
        cifar.parse(["--method", "lwdc", "--lam", "2", "--variant", "distill-search"])


@pytest.mark.parametrize("argv", [["--method", "random", "--lam", "1", "--distill", "1"],
                                  ["--method", "baseline-extended", "--distill", "1"],
                                  ["--method", "lwdc", "--lam", "1", "--distill", "-1"],
                                  ["--method", "lwdc", "--lam", "1", "--distill", "nan"]])
def test_distillation_is_refused_where_it_names_no_run(argv):
    with pytest.raises(SystemExit, match="--distill takes a positive weight"):
        cifar.parse(argv)


def test_an_ablated_search_is_not_an_lwdc_point_against_pruning():
    """The ablations are weakened on purpose: the matched-MACs tables and their verdict count LWDC points only."""
    from bench.report_compare import matched_pairs
    point = _result("lwdc-default-lam0.6-noise0.25", "lwdc", 57.0, 86.5, search_of="lwdc-default-lam0.6-noise0.25")
    ablated = _result("lwdc-default-lam0.6-noise0.25-abl_constant-noise", "lwdc", 58.0, 86.4,
                      search_of="lwdc-default-lam0.6-noise0.25", ablations=["constant-noise"])
    pruned = _result("prune-l1-global-default-lam0.6-noise0.25", "prune-l1-global", 57.4, 87.2,
                     matches="lwdc-default-lam0.6-noise0.25", macs_error=0.007, matched_within_5pct=True)
    by_point, pairs = matched_pairs([point, ablated, pruned])
    assert [(a["run"], b["run"]) for a, b, _ in pairs] == [(point["run"], pruned["run"])]
    assert by_point["lwdc-default-lam0.6-noise0.25"] == [point]


def test_a_named_pair_is_judged_on_the_two_runs_macs_not_the_pruning_run_s_own_target():
    """A pruning run hit its target (the point's seed-0 MACs) exactly; a run of the point that landed 10% higher is
    10% off it, and not matched."""
    from bench.report_compare import matched_pairs
    point = _result("lwdc-default-lam0.6-noise0.25", "lwdc", 55.0, 86.5, search_of="lwdc-default-lam0.6-noise0.25")
    pruned = _result("prune-l1-global-default-lam0.6-noise0.25", "prune-l1-global", 50.0, 87.2,
                     matches="lwdc-default-lam0.6-noise0.25", macs_error=0.0, matched_within_5pct=True)
    (_, _, error), = matched_pairs([point, pruned])[1]
    assert error == pytest.approx(50.0 / 55.0 - 1)
    lines, verdicts = report.matched_table([point, pruned])
    assert "| -9.1% | no |" in lines[2] and verdicts == []


def test_layer_macs_counts_a_layer_once_whether_its_parts_are_called_through_it_or_directly():
    """A branch of several modules counts under the layer it replaced; a graph that calls the parts directly
    (``lwdc.arch``'s rebuilt models do) gives the same figures, not a layer counted twice or not at all."""
    net = torch.nn.Sequential()
    net.add_module("stem", torch.nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("body", torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.ReLU(),
                                               torch.nn.Conv2d(8, 4, 1)))
    layers = ["stem", "body", "head"]
    direct = torch.fx.symbolic_trace(net)
    assert {n.target for n in direct.graph.nodes if n.op == "call_module"} >= {"body.0", "body.2"}
    expected = {"stem": 32 * 32 * 8 * 27, "body": 32 * 32 * (8 * 9 + 4 * 8), "head": 0}
    assert layer_macs.layer_macs(net, layers, (3, 32, 32)) == expected
    assert layer_macs.layer_macs(direct, layers, (3, 32, 32)) == expected
