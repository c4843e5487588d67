"""What a Python API user sees (the same before/after table as the command line, through ``log``) and quick-look
evaluation with ``max_batches`` (a seeded class-stratified sample, not the first batches of a sorted test set)."""
import torch

from lwdc import compress, format_summary
from lwdc.data import ArrayDataset, BatchLoader
from lwdc.tasks import Classification
from lwdc.train import evaluate, stratified_indices

from conftest import TinyNet

SETTINGS = dict(ops="minimal", lam=1.0, warmup_epochs=0.5, search_epochs=1, finetune_epochs=1, progress=False)


def test_compress_prints_the_cli_summary_through_log_unless_asked_not_to(quadrants):
    train, val = quadrants
    lines = []
    result = compress(TinyNet(), train, val, log=lines.append, **SETTINGS)
    printed = "\n".join(lines)
    table = format_summary(result.report)
    assert table in printed and printed.rstrip().endswith(table.splitlines()[-1])
    assert "| params" in printed and "latency eager (ms)" in printed and "alternating over" in printed
    quiet = []
    compress(TinyNet(), train, val, log=quiet.append, summary=False, **SETTINGS)
    assert quiet and not any("| params" in line for line in quiet)
    compress(TinyNet(), train, val, log=None, **SETTINGS)     # silent: nothing to call


def test_report_latency_is_one_paired_measurement(quadrants):
    train, val = quadrants
    report = compress(TinyNet(), train, val, log=None, **SETTINGS).report
    eager = report["latency"]["backends"]["eager"]
    assert report["before"]["latency_ms"] == eager["a_ms"] and report["after"]["latency_ms"] == eager["b_ms"]
    assert report["ratios"]["latency_ms"] == eager["ratio"]
    assert eager["ratio_range"][0] <= eager["ratio"] <= eager["ratio_range"][1]


def _sorted_test_set(per_class=40, classes=4):
    """A test split sorted by class, as the shipped CIFAR subset is: the first batches hold class 0 only."""
    y = torch.arange(classes).repeat_interleave(per_class)
    x = torch.randn(len(y), 3, 8, 8)
    return ArrayDataset(x, y, (0.0,) * 3, (1.0,) * 3)


def test_stratified_indices_keep_every_class_in_proportion_and_are_seeded():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_indices(labels, 20, len(labels), seed=3)
    counts = torch.bincount(labels[idx], minlength=3).tolist()
    assert counts == [12, 6, 2] and len(set(idx.tolist())) == 20
    assert torch.equal(idx, stratified_indices(labels, 20, len(labels), seed=3))
    assert not torch.equal(idx, stratified_indices(labels, 20, len(labels), seed=4))
    assert len(stratified_indices(None, 7, 50, seed=0).unique()) == 7


class Seen(torch.nn.Module):
    """Records the labels it was shown (the input's first value carries the label)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.labels = []

    def forward(self, x):
        self.labels += x[:, 0, 0, 0].round().long().tolist()
        return torch.zeros(len(x), 4) + self.w


def test_capped_evaluation_samples_every_class_not_the_first_batches():
    data = _sorted_test_set()
    data.x[:, 0, 0, 0] = data.y.float()                   # let the model see which class each input is
    loader = BatchLoader(data, 16)
    model = Seen()
    evaluate(model, Classification(), loader, max_batches=2)
    assert len(model.labels) == 32 and sorted(set(model.labels)) == [0, 1, 2, 3]
    assert torch.bincount(torch.tensor(model.labels)).tolist() == [8, 8, 8, 8]
    first = Seen()
    evaluate(first, Classification(), loader, max_batches=2, sample="first")
    assert set(first.labels) == {0}                       # what quick looks used to evaluate
    everything = Seen()
    evaluate(everything, Classification(), loader)
    assert len(everything.labels) == len(data)            # no cap: every batch, as before
