"""Transfer learning (weights of another task, head replaced, backbone frozen) and `lwdc compress --task
landmarks` end to end on a tiny synthetic landmark folder; bad settings fail before anything is written."""
import json
import os
import pickle
import re

import pytest
import torch
from click.testing import CliRunner

from lwdc.cli import main
from lwdc.runs import Run
from lwdc.transfer import TransferError, freeze, head_name, init_from

from conftest import TinyNet
from test_landmarks_data import PARTS, make_landmark_set

TOY = os.path.join(os.path.dirname(__file__), "plugins", "toy_model.py")


def _classifier(seed: int = 0, width: int = 8) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(num_classes=10, width=width)
    with torch.no_grad():                       # running statistics unlike a fresh model's
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net


def _check_transferred(model, source, fresh_head):
    src = source.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("head.2."):
            assert value.shape[0] == 8 and torch.equal(value, fresh_head[key])     # replaced: as initialised
        else:
            assert torch.equal(value, src[key]), key


@pytest.mark.parametrize("as_run", [False, True])
def test_a_classifier_starts_a_landmark_model_with_the_head_replaced(tmp_path, as_run):
    source = _classifier()
    if as_run:
        run = Run.create(tmp_path / "cifar", {"model_name": "tiny"}, lock=False)
        run.save_model("original", source, torch.zeros(1, 3, 8, 8), portable=False)
        run.write_report({"finished": True})
        where = tmp_path / "cifar"
    else:
        where = tmp_path / "cifar.pt"
        torch.save(source.state_dict(), where)
    torch.manual_seed(5)
    model = TinyNet(num_classes=8)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.2.")}
    report = init_from(model, where)
    _check_transferred(model, source, fresh)
    assert report["head"] == "head.2" and report["replaced"] == ["head.2.weight", "head.2.bias"]
    assert len(report["loaded"]) == len(model.state_dict()) - 2


def test_same_sized_head_is_kept_and_other_architectures_are_refused(tmp_path):
    source = _classifier()
    model = TinyNet(num_classes=10)
    assert init_from(model, _save(tmp_path, source))["replaced"] == []
    assert torch.equal(model.head[2].weight, source.head[2].weight)
    with pytest.raises(TransferError, match=r"stem.0.weight is \[4, 3, 3, 3\] in the source and \[8, 3, 3, 3\] here"):
        init_from(TinyNet(num_classes=8), _save(tmp_path, _classifier(width=4)))
    with pytest.raises(TransferError, match="no such run folder or weights file"):
        init_from(model, tmp_path / "nowhere.pt")


def _save(tmp_path, net):
    path = tmp_path / f"w{id(net)}.pt"
    torch.save(net.state_dict(), path)
    return path


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_weights_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"stem.0.weight": _System(f"touch {marker}")}, protocol=2))
    with pytest.raises(TransferError, match="not a readable weights file"):
        init_from(TinyNet(num_classes=8), evil)
    assert not marker.exists()


def test_freezing_the_backbone_trains_only_the_head():
    torch.manual_seed(0)
    net = TinyNet(num_classes=6)
    frozen = freeze(net, "backbone")
    assert head_name(net) == "head.2" and "stem.0.weight" in frozen and "head.2.weight" not in frozen
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    net(torch.randn(4, 3, 8, 8)).square().mean().backward()
    opt.step()
    after = net.state_dict()
    changed = {k for k in before
               if "running" not in k and "num_batches" not in k and not torch.equal(before[k], after[k])}
    assert changed == {"head.2.weight", "head.2.bias"}
    assert freeze(net, "none") == [] and all(p.requires_grad for p in net.parameters())


# ------------------------------------------------------------------------------------------------ the command line
QUICK = ["--model", TOY + ":build", "--search-epochs", "1", "--finetune-epochs", "1", "--warmup-epochs", "0.2",
         "--max-batches", "2", "--batch-size", "4", "--no-progress"]
SMALL = ["--data-option", "size=16", "--data-option", "folds=3"]


def test_compress_a_landmark_model_from_a_classifier(tmp_path):
    from plugins.toy_model import build

    make_landmark_set(tmp_path / "set", n=12, size=(32, 24))
    torch.manual_seed(0)
    source = build(num_classes=10, in_channels=3)
    torch.save(source.state_dict(), tmp_path / "cifar.pt")
    run = tmp_path / "run"
    args = ["compress", *QUICK, *SMALL, "--data", str(tmp_path / "set"), "--cache-dir", str(tmp_path / "cache"),
            "--task", "landmarks", "--loss", "wing", "--task-option", "w=5", "--init-from", str(tmp_path / "cifar.pt"),
            "--freeze", "backbone", "--pretrain-epochs", "1", "--run-dir", str(run), "--export", "c"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    from lwdc.export.c import find_compiler
    if find_compiler("host"):                            # the firmware's int8 C is bias-corrected for regression
        deploy = json.loads((run / "firmware" / "deploy.json").read_text())
        assert deploy["bias_correction"]["convs"] >= 1
    assert "task landmarks" in result.output and "head head.2 replaced (2 tensors" in result.output
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == "landmarks" and report["primary_metric"] == "nme"
    assert report["primary_higher_is_better"] is False
    for side in ("before", "after"):
        m = report[side]
        assert {"rmse_px", "mean_error_px", "nme", "pck", "error_px/left_eye", "error_px/nose"} <= set(m)
        assert m["rmse_px"] >= m["mean_error_px"] > 0 and 0 <= m["pck"] <= 100 and m["visible"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["loss"] == "wing" and config["task_options"] == ["w=5"] and config["freeze"] == "backbone"
    pretrained = torch.load(run / "checkpoints" / "pretrain.pt", weights_only=True)["model"]
    assert torch.equal(pretrained["a.0.weight"], source.state_dict()["a.0.weight"])       # frozen: unchanged
    assert pretrained["head.2.weight"].shape == (6, 16)                                  # 3 points x (x, y)
    assert Run.open_finished(run).load_model()(torch.zeros(1, 3, 16, 16)).shape == (1, 6)
    # the report of a landmark run: points drawn on frames and per-point errors instead of class saliency
    result = CliRunner().invoke(main, ["report", str(run), "--cka-samples", "4"])
    assert result.exit_code == 0, result.output
    page = (run / "report" / "report.html").read_text()
    assert re.findall(r'<h2 id="([^"]+)"', page)[-2:] == ["landmarks", "similarity"] and "saliency" not in page
    analysis = json.loads((run / "report" / "analysis.json").read_text())
    assert set(analysis["landmarks"]["per_point"]) == set(PARTS)
    assert (run / "report" / "landmark_frames.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--loss", "rwing", "--data", "cifar10-subset"], "--loss and --task-option apply to other tasks"),
    (["--task-option", "q=1"], "--task landmarks: .*'q'"),
    (["--task-option", "r=20"], r"r must be in \[0, w\)"),
    (["--freeze", "backbone", "--pretrain-epochs", "1"], "--freeze backbone keeps --init-from's backbone"),
    (["--init-from", "WIDE"], r"--init-from into .*: .*another architecture"),
])
def test_bad_landmark_settings_fail_before_writing(tmp_path, args, message):
    make_landmark_set(tmp_path / "set", n=6, size=(32, 24))
    torch.save(TinyNet(num_classes=10).state_dict(), tmp_path / "wide.pt")
    args = [str(tmp_path / "wide.pt") if a == "WIDE" else a for a in args]
    run = tmp_path / "run"
    data = [] if "--data" in args else ["--data", str(tmp_path / "set"), *SMALL]
    result = CliRunner().invoke(main, ["compress", *QUICK, *data, "--cache-dir", str(tmp_path / "cache"),
                                       "--run-dir", str(run), *args])
    assert result.exit_code != 0 and re.search(message, result.output), result.output
    assert not run.exists()
