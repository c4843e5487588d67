"""Classification options for imbalanced data: class weights, and clinical metrics gathered over a whole set."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lwdc.data import ArrayDataset, BatchLoader
from lwdc.metrics import clinical_metrics
from lwdc.tasks import Classification, balanced_class_weights
from lwdc.train import evaluate


def test_class_weights_weight_the_loss():
    torch.manual_seed(0)
    out, y = torch.randn(12, 3), torch.randint(0, 3, (12,))
    task = Classification(class_weights=[1.0, 2.0, 0.5], label_smoothing=0.1)
    want = F.cross_entropy(out, y, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
    assert torch.allclose(task.loss(out, y), want)
    with pytest.raises(ValueError, match="one weight per class"):
        Classification(class_weights=[1.0, 2.0]).loss(out, y)
    with pytest.raises(ValueError, match="positive"):
        Classification(class_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="basic, clinical"):
        Classification(metrics="fancy")


def test_balanced_weights_on_a_one_to_five_set():
    labels = torch.tensor([1] * 10 + [0] * 50)
    w = balanced_class_weights(labels, 2)
    assert w.mean().item() == pytest.approx(1.0)
    assert (w[1] / w[0]).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match=r"class\(es\) \[2\] have no training samples"):
        balanced_class_weights(labels, 3)


def test_clinical_evaluate_over_batches_equals_whole_set():
    torch.manual_seed(0)
    x = torch.randn(70, 2, 8)
    y = (x[:, 0, :4].mean(1) + 0.5 * torch.randn(70) > 0.3).long()
    data = ArrayDataset(x, y, (0.0, 0.0), (1.0, 1.0))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    loader = BatchLoader(data, 16)
    got = evaluate(model, Classification(metrics="clinical"), loader)
    with torch.no_grad():
        want = clinical_metrics(model(x), y)
    for key in ("auc", "sensitivity", "specificity", "balanced_accuracy", "threshold", "f1"):
        assert got[key] == pytest.approx(want[key]), key
    assert got["confusion"] == want["confusion"]
    basic = evaluate(model, Classification(), loader)
    assert set(basic) == {"loss", "accuracy"} and basic["accuracy"] == pytest.approx(got["accuracy"])
    assert got["accuracy"] == pytest.approx(100 * float((model(x).argmax(1) == y).float().mean()))
    assert np.isfinite(got["auc"])


def test_cli_class_weights_count_must_match_the_classes(tmp_path):
    """Ten CIFAR classes, three weights: a named error, and no run folder written."""
    from click.testing import CliRunner
    from lwdc.cli import main
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["compress", "--model", "resnet8", "--data", "cifar10-subset",
                                       "--class-weights", "1,2,3", "--no-progress", "--run-dir", str(run)])
    assert result.exit_code != 0 and "3 weights for the 10 classes" in result.output, result.output
    assert not run.exists()


def test_cli_clinical_metrics_with_balanced_weights(tmp_path):
    """A quick run with clinical metrics and balanced weights finishes and reports them for both models."""
    from click.testing import CliRunner
    from lwdc.cli import main
    from test_cli import QUICK
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["compress", *QUICK, "--metrics", "clinical", "--class-weights", "balanced",
                                       "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report.json").read_text()
    assert text.count('"balanced_accuracy"') >= 2 and text.count('"macro_f1"') >= 2, text[:2000]
