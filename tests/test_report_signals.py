"""The report's detection and signal-saliency sections: a binary EEG-like run gets ROC curves, both confusion
matrices and the clinical table (equal to lwdc.metrics on the same outputs); saliency finds where a model reads."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from lwdc.analysis.detection import class_saliency, detection_numbers, signal_saliency_section
from lwdc.analysis.report import build_report
from lwdc.cli import main
from lwdc.data import ArrayDataset, load_data
from lwdc.metrics import clinical_metrics

from test_cli_signals import QUICK
from test_data_signals import make_epochs


@pytest.fixture(scope="module")
def eeg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eeg")
    data = make_epochs(root)
    run = root / "run"
    result = CliRunner().invoke(main, ["compress", *QUICK, "--data", str(data), "--data-option", "fold=1",
                                       "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run, data


def test_binary_run_report_has_roc_confusion_and_saliency(eeg_run):
    run, data = eeg_run
    path = build_report(run, samples=2, cka_samples=0, probe_train=0, probe_test=0, smoothgrad_samples=2)
    page = path.read_text()
    for anchor in ('id="detection"', 'alt="ROC curves"', 'alt="confusion matrices"', 'id="signal-saliency"',
                   "Youden", "sensitivity", "specificity", "sampled at 128 Hz from -0.1 s"):
        assert anchor in page, anchor
    numbers = json.loads((path.parent / "analysis.json").read_text())
    bundle = load_data(str(data), options={"fold": 1})           # the run's own fold, as config.json says
    from lwdc.runs import Run
    original = Run(run).load_model("original")
    with torch.no_grad():
        want = clinical_metrics(original(bundle.test.normalize(bundle.test.x)), bundle.test.y)
    got = numbers["detection"]["original"]
    for key in ("auc", "sensitivity", "specificity", "balanced_accuracy", "threshold"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["confusion"] == want["confusion"]
    assert (path.parent / "roc.png").is_file() and (path.parent / "signal_saliency.png").is_file()


class Window(nn.Module):
    """Reads only channel 0, samples 60-70: a logit for class 1, its negative for class 0."""

    def forward(self, x):
        s = x[:, 0, 60:70].sum(1, keepdim=True)
        return torch.cat([-s, s], 1)


def test_saliency_peaks_where_the_model_reads():
    torch.manual_seed(0)
    x, y = torch.randn(40, 4, 116), torch.arange(40) % 2
    maps = class_saliency(Window(), x, y, 2)
    for c in (0, 1):
        assert maps[c].shape == (4, 116)
        assert maps[c][1:].abs().max() == 0 and 60 <= int(maps[c][0].argmax()) < 70
    data = ArrayDataset(x, y, (0.0,) * 4, (1.0,) * 4)
    _, figures, numbers = signal_saliency_section({"m": Window()}, data, ["non-target", "target"],
                                                  {"sample_rate": 128.0, "time_offset": -0.1})
    peak = numbers["m"]["peak_time"]["target"]
    assert -0.1 + 60 / 128 <= peak < -0.1 + 70 / 128 and figures["signal_saliency.png"][:4] == b"\x89PNG"


def test_multiclass_detection_numbers():
    x, y = torch.randn(30, 1, 50), torch.arange(30) % 3
    model = nn.Sequential(nn.Flatten(), nn.Linear(50, 3))
    got = detection_numbers({"m": model}, ArrayDataset(x, y, (0.0,), (1.0,)))["m"]
    assert np.array(got["confusion"]).sum() == 30 and "roc" not in got and len(got["per_class"]["recall"]) == 3
