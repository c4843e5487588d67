"""bench.signals end to end on a tiny made-up P300 set (quick mode): baseline, an LWDC target, LDA, int8 C on the
whole test fold, and the RESULTS.md section built from the rows."""
import json

import pytest

from bench import report_signals, signals
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
