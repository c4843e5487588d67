"""Fine-tuning with the original as teacher: the term's value, that it pulls the student toward the teacher, how
it enters the pipeline and its checkpoints, and the refusals."""
import copy

import pytest
import torch
from torch import nn

from lwdc import CompressConfig, compress
from lwdc.api import compress_fingerprint
from lwdc.distill import Distillation, distillation_loss
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, fit

from conftest import TinyNet

QUICK = dict(ops="minimal", lam=1.0, warmup_epochs=0.25, search_epochs=1, finetune_epochs=2, progress=False)


def test_the_term_is_t_squared_kl_of_the_softened_distributions():
    torch.manual_seed(0)
    student, teacher, t = torch.randn(5, 4), torch.randn(5, 4), 3.0
    p, q = torch.softmax(teacher / t, 1), torch.softmax(student / t, 1)
    by_hand = (p * (p.log() - q.log())).sum(1).mean() * t * t
    assert distillation_loss(student, teacher, t).item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert distillation_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(teacher + 7.0, teacher, t).item() == pytest.approx(0.0, abs=1e-5)  # logits' shift


def _gap(student: nn.Module, teacher: nn.Module, data) -> float:
    student.eval(), teacher.eval()
    with torch.no_grad():
        return sum(distillation_loss(student(x), teacher(x), 1.0).item() for x, _ in data) / len(data)


def test_distillation_pulls_the_student_toward_the_teacher(quadrants):
    """Labels drawn at random say nothing of the teacher; only the distillation term can bring the student's
    outputs to the teacher's. The teacher itself is never changed."""
    train, _ = quadrants
    torch.manual_seed(0)
    teacher = TinyNet()
    fit(teacher, Classification(), train, None, TrainConfig(epochs=4, lr=0.05, progress=False), log=lambda s: None)
    frozen = copy.deepcopy(teacher.state_dict())
    g = torch.Generator().manual_seed(3)
    noise = [(x, torch.randint(0, 4, (len(y),), generator=g)) for x, y in train]
    cfg = TrainConfig(epochs=4, lr=0.05, progress=False)
    gaps = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(1)
        student = TinyNet()
        method = Distillation(teacher, weight) if weight else None
        fit(student, Classification(), noise, None, cfg, method=method, log=lambda s: None)
        gaps[weight] = _gap(student, teacher, train)
    assert gaps[5.0] < 0.5 * gaps[0.0], gaps
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen.items())


def test_compress_distils_only_the_fine_tune_and_a_search_checkpoint_is_shared(quadrants, tmp_path):
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()
    fit(net, Classification(), train, None, TrainConfig(epochs=3, lr=0.05, progress=False), log=lambda s: None)
    plain = CompressConfig(**QUICK)
    kd = CompressConfig(**QUICK, distill=1.0, distill_temperature=2.0)
    assert compress_fingerprint(plain, "search") == compress_fingerprint(kd, "search")
    assert compress_fingerprint(plain) != compress_fingerprint(kd)
    a = compress(net, train, val, config=plain, run_dir=tmp_path / "a", log=lambda s: None)
    # the distilled run starts from the plain run's finished search, as bench.cifar does with -kd runs
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    (tmp_path / "b" / "checkpoints" / "search.pt").write_bytes((tmp_path / "a" / "checkpoints" / "search.pt").read_bytes())
    lines = []
    b = compress(net, train, val, config=kd, run_dir=tmp_path / "b", log=lines.append)
    assert any(line.startswith("search: finished earlier") for line in lines)
    assert a.choices == b.choices
    assert a.report["history"]["search"] == b.report["history"]["search"]
    assert a.report["history"]["finetune"] != b.report["history"]["finetune"]
    assert b.report["config"]["distill"] == 1.0 and b.report["config"]["distill_temperature"] == 2.0


@pytest.mark.parametrize("bad", [dict(distill=-1.0), dict(distill=1.0, distill_temperature=0.0),
                                 dict(distill=float("nan"))])
def test_bad_distillation_settings_are_refused(bad):
    with pytest.raises(ValueError, match="distill"):
        CompressConfig(**bad).validate()


def test_a_task_without_logits_is_refused_before_any_work(quadrants):
    from lwdc.landmarks.task import Landmarks
    train, val = quadrants
    lines = []
    with pytest.raises(ValueError, match="distill applies to classification"):
        compress(TinyNet(), train, val, config=CompressConfig(**QUICK, distill=1.0), task=Landmarks(),
                 log=lines.append)
    assert lines == []


def test_a_distilled_search_is_its_own_search_and_resumes_with_its_gates(quadrants, tmp_path):
    """distill_search makes the search depend on the distillation settings (its checkpoint is not the plain
    search's), trains toward the teacher (other search history than the plain one), and a finished one loads back
    with its gates (the inner search's state is what the checkpoint holds)."""
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()
    fit(net, Classification(), train, None, TrainConfig(epochs=3, lr=0.05, progress=False), log=lambda s: None)
    kd = CompressConfig(**QUICK, distill=1.0)
    both = CompressConfig(**QUICK, distill=1.0, distill_search=True)
    hotter = CompressConfig(**QUICK, distill=1.0, distill_search=True, distill_temperature=8.0)
    assert len({compress_fingerprint(c, "search") for c in (kd, both, hotter)}) == 3
    a = compress(net, train, val, config=kd, log=None)
    b = compress(net, train, val, config=both, run_dir=tmp_path / "b", log=None)
    assert a.report["history"]["search"] != b.report["history"]["search"]
    assert "probabilities" in b.report["history"]["search"][-1]        # the inner search's epoch fields
    lines = []
    again = compress(net, train, val, config=both, run_dir=tmp_path / "b", log=lines.append)
    assert any(line.startswith("search: finished earlier") for line in lines)
    assert again.choices == b.choices
    with pytest.raises(ValueError, match="distill_search .* set distill > 0"):
        CompressConfig(distill_search=True).validate()


def test_a_distilled_fine_tune_resumes_from_its_checkpoint(quadrants, tmp_path):
    """The first distilled checkpoints lacked the keys every lwdc checkpoint holds, so a distilled fine-tune could
    not resume: a second call on a finished folder loads every stage back."""
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()
    kd = CompressConfig(**QUICK, distill=1.0)
    first = compress(net, train, val, config=kd, run_dir=tmp_path, log=None)
    (tmp_path / "report.json").unlink()             # as if killed after fine-tuning, before the report
    lines = []
    again = compress(net, train, val, config=kd, run_dir=tmp_path, log=lines.append)
    assert any(line.startswith("finetune: finished earlier") for line in lines)
    assert again.report["after"]["accuracy"] == first.report["after"]["accuracy"]
