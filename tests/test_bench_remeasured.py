"""bench.report's use of bench.remeasure's figures: each model's time is its fastest round, since load on the shared
CPU only ever slows a round, and the speed ratio's reference, the original network's time, pools the baseline with
its identical ``baseline-extended`` twin (a run of slow rounds once raised every ratio by up to 0.13)."""
import json

import pytest

report_latency = pytest.importorskip("bench.report_latency")

BASE = "resnet20_s_baseline_s0"
#: the rounds of the first re-timing of 2026-12-05 (ms): three slow rounds of the baseline, none of its twin
SLOW = [0.723, 0.725, 0.774, 0.769, 0.760]
TWIN = [0.723, 0.720, 0.723, 0.743, 0.724]


def entry(method: str, rounds: list[float]) -> dict:
    ordered = sorted(rounds)
    return {"method": method, "baseline": BASE,
            "ort_b1": {"median": ordered[len(ordered) // 2], "rounds": rounds}}


def write(tmp_path, models: dict):
    path = tmp_path / "latency_s.json"
    path.write_text(json.dumps({"models": models}))
    return path


def run(file: str) -> dict:
    return {"_file": file, "macs": 500, "macs_ratio": 0.5, "latency_ms": {"ort_b1": 9.0},
            "baseline_latency_ms": {"ort_b1": 9.0}, "speed_ratio": {"ort_b1": 9.0}}


def test_the_original_time_pools_the_baseline_with_its_identical_extended_twin(tmp_path):
    models = {BASE: entry("baseline", SLOW), "ext": entry("baseline-extended", TWIN),
              "lw": entry("lwdc", [0.45] * 5)}
    (r,), _ = report_latency.apply_remeasured([run("lw")], write(tmp_path, models))
    # the fastest of the ten pooled rounds is the twin's 0.720; the baseline's own median, 0.760, would give 0.816
    assert r["baseline_latency_ms"]["ort_b1"] == pytest.approx(0.720)
    assert r["speed_ratio"]["ort_b1"] == pytest.approx((1 - 0.45 / 0.720) / 0.5)
    assert r["speed_ratio"]["ort_b1"] < 0.76


def test_without_a_twin_the_reference_is_the_baselines_fastest_round(tmp_path):
    models = {BASE: entry("baseline", [0.72, 0.70, 0.74]), "lw": entry("lwdc", [0.35] * 3)}
    (r,), _ = report_latency.apply_remeasured([run("lw")], write(tmp_path, models))
    assert r["baseline_latency_ms"]["ort_b1"] == pytest.approx(0.70)
    assert r["speed_ratio"]["ort_b1"] == pytest.approx((1 - 0.35 / 0.70) / 0.5)


def test_a_burst_of_load_over_three_rounds_does_not_set_a_models_time(tmp_path):
    """The rounds of one width point in the re-timing of 2026-12-06 09:44: two at 0.327 ms, then three at 0.45 ms,
    when a block of neighbours in the rotation slowed alike. By the median it read a speed ratio of 0.60."""
    models = {BASE: entry("baseline", [0.722] * 5), "lw": entry("lwdc", [0.327, 0.327, 0.448, 0.446, 0.455])}
    (r,), _ = report_latency.apply_remeasured([run("lw")], write(tmp_path, models))
    assert r["latency_ms"]["ort_b1"] == pytest.approx(0.327)
    assert r["speed_ratio"]["ort_b1"] == pytest.approx((1 - 0.327 / 0.722) / 0.5)


def test_an_extended_run_of_another_baseline_is_not_pooled(tmp_path):
    other = {**entry("baseline-extended", [5.0] * 5), "baseline": "resnet20_s_baseline_s1"}
    models = {BASE: entry("baseline", [0.72] * 3), "ext1": other, "lw": entry("lwdc", [0.36] * 3)}
    (r,), _ = report_latency.apply_remeasured([run("lw")], write(tmp_path, models))
    assert r["baseline_latency_ms"]["ort_b1"] == pytest.approx(0.72)


def test_a_change_that_rounds_to_zero_reads_as_the_same_time():
    report = pytest.importorskip("bench.report")
    assert report.time_change(1.004) == "the same time"      # read "0% MORE time" before
    assert report.time_change(0.996) == "the same time"
    assert report.time_change(1.03) == "3% MORE time"
    assert report.time_change(0.88) == "12% less time"
