"""bench.signals end to end on a tiny made-up P300 set (quick mode): baseline, an LWDC target, LDA, int8 C on the
whole test fold, and the RESULTS.md section built from the rows."""
import json

import pytest

from bench import report_signals, signals
from bench.random_arch import draw_seed
from bench.remeasure import remeasure_signals
from lwdc.export.c import find_compiler

from test_data_signals import make_epochs


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
def test_quick_p300_rows_and_section(tmp_path):
    data = make_epochs(tmp_path, recordings_per_subject=4, per_recording=40)
    out = tmp_path / "results" / "signals"
    signals.main(["--set", "p300", "--quick", "--data", str(data), "--splits", "0", "--models", "eegnet",
                  "--points", "macs=0.5x", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache")])
    rows = {p.name: json.loads(p.read_text()) for p in (out / "p300").glob("*.json")}
    assert set(rows) == {"eegnet_fold0_baseline_quick.json", "eegnet_fold0_lwdc-macs0.5x_quick.json",
                         "eegnet_fold0_lda_quick.json"}
    lwdc = rows["eegnet_fold0_lwdc-macs0.5x_quick.json"]
    assert lwdc["budgets"][0]["met"] and lwdc["macs_ratio"] <= 0.5 * 1.05
    assert lwdc["c"]["int8"]["flash_bytes"] > 0 and 0 <= lwdc["c"]["int8"]["metrics"]["auc"] <= 1
    assert sum(map(sum, lwdc["c"]["int8"]["metrics"]["confusion"])) == lwdc["test"]       # the whole test fold
    assert 0 <= rows["eegnet_fold0_lda_quick.json"]["metrics"]["auc"] <= 1
    for r in rows.values():
        r["quick"] = False                                     # the section leaves quick rows out
        (out / "p300" / f"{r['method']}.json").write_text(json.dumps(r))
    text = report_signals.section(tmp_path / "results")
    assert "shrinkage LDA" in text and "lwdc-macs0.5x" in text and "| eegnet | baseline | 1 |" in text


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
def test_rows_of_other_settings_are_measured_again_and_the_baseline_kept(tmp_path, monkeypatch):
    """A row is 'finished' only under the settings it was written with: an LWDC row from other search settings
    is measured again (its run folder moved aside, as its checkpoints would be refused); the baseline, which
    does not depend on them, is kept."""
    data = make_epochs(tmp_path, recordings_per_subject=4, per_recording=40)
    out, cache = tmp_path / "results" / "signals", tmp_path / "cache"
    argv = ["--set", "p300", "--quick", "--data", str(data), "--splits", "0", "--models", "eegnet", "--points",
            "lam=1", "--out-dir", str(out), "--cache-dir", str(cache)]
    signals.main(argv)
    rows = {p.name: p.stat().st_mtime_ns for p in (out / "p300").glob("*.json")}
    signals.main(argv)                                         # same settings: nothing measured again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "p300").glob("*.json")} == rows
    monkeypatch.setitem(signals.SETS, "p300", signals.replace(signals.SETS["p300"], search={"noise_end": 0.5}))
    signals.main(argv)
    again = {p.name: p.stat().st_mtime_ns for p in (out / "p300").glob("*.json")}
    assert again["eegnet_fold0_baseline_quick.json"] == rows["eegnet_fold0_baseline_quick.json"]
    assert again["eegnet_fold0_lwdc-lam1_quick.json"] != rows["eegnet_fold0_lwdc-lam1_quick.json"]
    row = json.loads((out / "p300" / "eegnet_fold0_lwdc-lam1_quick.json").read_text())
    assert row["settings"]["search"] == {"noise_end": 0.5}
    assert len(list((cache / "p300" / "eegnet_fold0_quick").glob("lwdc-lam1.stale-*"))) == 1


@pytest.mark.skipif(find_compiler() is None, reason="no C compiler")
def test_random_draws_matched_on_another_cost_are_named_and_reported_apart(tmp_path):
    """Issue 26 on a 1-D task with --random-match: the draw is kept within 3% of the point on that cost (here
    parameters), its row and run folder name the cost, and the section gives it its own 'matched on' row."""
    data = make_epochs(tmp_path, recordings_per_subject=4, per_recording=40)
    out = tmp_path / "results" / "signals"
    signals.main(["--set", "p300", "--quick", "--data", str(data), "--splits", "0", "--models", "eegnet",
                  "--points", "macs=0.5x", "--out-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                  "--random-draws", "1", "--random-match", "params"])
    drawn = json.loads((out / "p300" / "eegnet_fold0_lwdc-macs0.5x-random-params-d0_quick.json").read_text())
    record = drawn["random_draw"]
    assert record["match"] == "params" and abs(record["draw_ratio"] / record["target_ratio"] - 1) <= 0.03
    assert record["seed"] == draw_seed(0, 0)        # one seed rule for every matched cost, as bench.cifar's
    draw_dir = tmp_path / "cache" / "p300" / "eegnet_fold0_quick" / "lwdc-macs0.5x-random-params-d0"
    # the draw is derived as drawn: the point's MACs target would repair and fill a params-matched draw toward the
    # point's MACs (the FSDD latency draw ended as another network and the run stopped)
    report = json.loads((draw_dir / "report.json").read_text())
    assert report["budgets"] == [] and report["choices"] == record["choices"] == drawn["choices"]
    # the rows' own ORT times came from separate processes: the point, its draw and their baseline timed together
    timed = remeasure_signals(out, tmp_path / "cache", "p300", rounds=1, log=lambda *_: None)["models"]
    point, draw = "eegnet_fold0_lwdc-macs0.5x_quick", "eegnet_fold0_lwdc-macs0.5x-random-params-d0_quick"
    assert timed[point]["baseline"] == timed[draw]["baseline"] == "eegnet_fold0_baseline_quick"
    assert all(timed[k]["ort_b1"]["median"] > 0 for k in (point, draw, "eegnet_fold0_baseline_quick"))
    for p in (out / "p300").glob("*.json"):
        r = json.loads(p.read_text())
        r["quick"] = False
        p.write_text(json.dumps(r))
    text = report_signals.section(tmp_path / "results")
    assert "| eegnet | 0 | lwdc-macs0.5x | params |" in text
    row = next(line for line in text.splitlines() if line.startswith("| eegnet | 0 | lwdc-macs0.5x | params |"))
    assert row.count("|") == 13 and any(v in row for v in ("search ahead", "random matches", "random beats"))
    assert " *" in row and "* marks a row's own time" in text     # the file times the quick rows, not these
    retimed = json.loads((out / "latency_p300.json").read_text())
    retimed["models"] = {k.replace("_quick", ""): {**v, "baseline": v["baseline"].replace("_quick", "")}
                         for k, v in retimed["models"].items()}
    (out / "latency_p300.json").write_text(json.dumps(retimed))
    text = report_signals.section(tmp_path / "results")
    row = next(line for line in text.splitlines() if line.startswith("| eegnet | 0 | lwdc-macs0.5x | params |"))
    lw_ms = timed[point]["ort_b1"]["median"]
    frac = lw_ms / timed["eegnet_fold0_baseline_quick"]["ort_b1"]["median"]
    assert f"| {lw_ms:.3f} ({frac:.3f}x) |" in row and " *" not in row and "re-timed together" in text


def test_tables_only_prices_the_supernet_and_trains_nothing(tmp_path, capsys):
    """--tables-only (for a measured cost, run on an idle machine before the draws): one table per (model, split),
    no baseline trained, no row or run folder written."""
    data = make_epochs(tmp_path, recordings_per_subject=4, per_recording=40)
    out, cache = tmp_path / "results", tmp_path / "cache"
    signals.main(["--set", "p300", "--quick", "--data", str(data), "--splits", "0", "1", "--models", "eegnet",
                  "--out-dir", str(out), "--cache-dir", str(cache), "--random-match", "params", "--tables-only"])
    logged = capsys.readouterr().out
    assert logged.count("eegnet split") == 2 and "params table of" in logged and "the original costs" in logged
    assert not out.exists() and not cache.exists()


def test_a_row_is_current_whatever_other_rows_the_set_names():
    """Adding a point (or a model, a split) to a set leaves its finished rows alone: the FSDD point's row, written
    when the set named one point, was measured again (and its run folder moved aside) once a second point was
    added. A change to how the row is made still counts."""
    from bench.signals import SETS, _relevant, point_name
    now = json.loads(json.dumps({**SETS["fsdd"].__dict__, "model_kwargs": {}}))
    written = {**now, "points": ["macs=0.5x"], "models": ["m5"], "splits": [0]}
    for method in ("lwdc-signal-macs0.5x", "lwdc-signal-macs0.5x-random-d0", "baseline", "lda"):
        assert _relevant(written, method) == _relevant(now, method)
    searched_otherwise = {**now, "search": {**now["search"], "lr": 0.05}}
    assert _relevant(searched_otherwise, "lwdc-signal-macs0.5x") != _relevant(now, "lwdc-signal-macs0.5x")
    assert _relevant(searched_otherwise, "baseline") == _relevant(now, "baseline")
    assert _relevant({**now, "epochs": 5}, "baseline") != _relevant(now, "baseline")


def test_each_signal_set_still_has_the_settings_its_reported_rows_ran_under():
    """A rerun of bench.signals must find every committed LWDC row current (not measure it again under other
    settings), with the budget signal pinned to the law the rows ran under. Caught a comment that swallowed FSDD's fine-tuning
    settings (30 epochs at 0.05 fell back to 10 at 0.01)."""
    from dataclasses import asdict
    from pathlib import Path

    from bench.signals import SETS, _relevant, point_name
    from lwdc.api import LEGACY_DEFAULTS

    root = Path(__file__).resolve().parent.parent / "bench" / "results" / "signals"
    rows = [json.loads(f.read_text()) for f in sorted(root.glob("*/*.json"))]
    rows = [r for r in rows if r.get("settings") and not r.get("quick") and r["set"] in SETS
            and any(r["method"].startswith(point_name(point, SETS[r["set"]].ops.get(r["model"], "default")))
                    for point in SETS[r["set"]].points)]          # the rows of the sets' points (older grids aside)
    assert {r["set"] for r in rows} == set(SETS)
    for name, spec in SETS.items():
        assert spec.search["budget_signal"] == LEGACY_DEFAULTS["budget_signal"], name
    for r in rows:
        now = json.loads(json.dumps(asdict(SETS[r["set"]])))     # tuples as JSON writes them
        then = _relevant(r["settings"], r["method"])
        now = _relevant({k: v for k, v in now.items() if k in r["settings"]}, r["method"])   # as the row knew them
        assert then == now, (r["set"], r["method"])
