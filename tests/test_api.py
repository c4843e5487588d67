"""compress() end to end on tiny data, and an interrupted run resumed to the same result."""
import pytest
import torch

from lwdc import compress
from lwdc.runs import CheckpointError

from conftest import TinyNet

SETTINGS = dict(ops="minimal", lam=1.0, warmup_epochs=0.5, search_epochs=2, finetune_epochs=2, progress=False)


class Interrupt(Exception):
    pass


def _run(quadrants, run_dir, stop_at=None, **overrides):
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()

    def log(line):
        if stop_at and line.startswith(stop_at):
            raise Interrupt(line)

    return compress(net, train, val, run_dir=run_dir, log=log, **{**SETTINGS, **overrides})


def test_compress_reports_and_keeps_user_model(quadrants, tmp_path):
    train, val = quadrants
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = compress(net, train, val, log=lambda s: None, **SETTINGS)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    report = result.report
    assert report["derive_max_abs_diff"] <= 1e-5
    assert report["after"]["macs"] <= report["before"]["macs"]
    assert report["expected_cost_ratio"]["macs"] == pytest.approx(report["after"]["macs"] / report["before"]["macs"])
    assert len(report["history"]["search"]) == 2 and len(report["history"]["finetune"]) == 2
    assert set(result.choices) == set(report["choices"])


@pytest.mark.parametrize("stop_at", ["search    epoch   1/2", "finetune  epoch   1/2"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(quadrants, tmp_path, stop_at):
    reference = _run(quadrants, tmp_path / "ref").model.state_dict()
    with pytest.raises(Interrupt):
        _run(quadrants, tmp_path / "cut", stop_at=stop_at)
    assert not (tmp_path / "cut" / "report.json").exists()
    assert not list((tmp_path / "cut").rglob("*.tmp")), "a half-written checkpoint was left"
    resumed = _run(quadrants, tmp_path / "cut").model.state_dict()
    for key, value in reference.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-6), key


def test_resume_with_other_settings_or_foreign_checkpoint_is_refused(quadrants, tmp_path):
    with pytest.raises(Interrupt):
        _run(quadrants, tmp_path / "r", stop_at="search    epoch   1/2")
    with pytest.raises(CheckpointError, match="another configuration"):
        _run(quadrants, tmp_path / "r", lam=2.0)
    (tmp_path / "r" / "checkpoints" / "search.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable lwdc checkpoint"):
        _run(quadrants, tmp_path / "r")
    torch.save({"some": "dict"}, tmp_path / "r" / "checkpoints" / "search.pt")
    with pytest.raises(CheckpointError, match="not an lwdc 'search' checkpoint"):
        _run(quadrants, tmp_path / "r")


def test_finished_search_is_fine_tuned_again_with_other_fine_tuning_settings(quadrants, tmp_path):
    """The search checkpoint does not depend on the fine-tuning settings: a longer fine-tune of the same search
    reuses it (same choices, no search epoch run), while a change the search depends on is still refused."""
    import shutil

    first = _run(quadrants, tmp_path / "a")
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "search.pt", tmp_path / "b" / "checkpoints" / "search.pt")
    lines = []
    train, val = quadrants
    torch.manual_seed(0)
    longer = compress(TinyNet(), train, val, run_dir=tmp_path / "b", log=lines.append,
                      **{**SETTINGS, "finetune_epochs": 3, "finetune_lr": 0.01})
    assert any(line.startswith("search: finished earlier") for line in lines)
    assert not any(line.startswith("search    epoch") for line in lines)
    assert longer.choices == first.choices and len(longer.report["history"]["finetune"]) == 3
    with pytest.raises(CheckpointError, match="another configuration"):     # the fine-tune checkpoint does
        _run(quadrants, tmp_path / "b")
    with pytest.raises(CheckpointError, match="another configuration"):     # and the search depends on lam
        _run(quadrants, tmp_path / "b", lam=2.0, finetune_epochs=3, finetune_lr=0.01)
