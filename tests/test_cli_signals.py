"""`lwdc compress` on 1-D EEG epochs: reader options (--data-option), clinical metrics and class weights reach the
run; bad values fail before anything is written; a resume reads the same settings back."""
import json

import pytest
from click.testing import CliRunner

from lwdc.cli import main

from test_data_signals import make_epochs

QUICK = ["--model", "farahat1d", "--width", "0.5", "--pretrain-epochs", "1", "--search-epochs", "1",
         "--finetune-epochs", "1", "--warmup-epochs", "0.2", "--max-batches", "2", "--batch-size", "16",
         "--no-progress", "--lam", "1"]


def test_clinical_run_on_eeg_folds(tmp_path):
    data = make_epochs(tmp_path)
    run = tmp_path / "run"
    args = ["compress", *QUICK, "--data", str(data), "--data-option", "fold=1", "--data-option", "folds=2",
            "--class-weights", "balanced", "--run-dir", str(run)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((run / "report.json").read_text())
    for side in ("before", "after"):       # auto: two classes -> clinical metrics on both models
        assert 0 <= report[side]["auc"] <= 1 and len(report[side]["confusion"]) == 2
        assert "sensitivity" in report[side] and "balanced_accuracy" in report[side]
    config = json.loads((run / "config.json").read_text())
    assert config["data_options"] == ["fold=1", "folds=2"] and config["class_weights"] == "balanced"
    again = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("args, message", [
    (["--class-weights", "1,2,3"], "3 weights for the 2 classes"),
    (["--class-weights", "1,-2"], "must be positive"),
    (["--data-option", "fold"], "use KEY=VALUE"),
    (["--data-option", "fould=1"], "accepted: subject, split, fold, folds, reject_uv"),
])
def test_bad_signal_settings_fail_before_writing(tmp_path, args, message):
    data = make_epochs(tmp_path)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["compress", *QUICK, "--data", str(data), "--run-dir", str(run), *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not run.exists()
