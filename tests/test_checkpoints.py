"""Step-level checkpoints, divergence, and every kind of bad checkpoint or run folder refused with a clean message."""
import copy
import json
import math
import shutil
from fractions import Fraction

import pytest
import torch
from click.testing import CliRunner

from lwdc.methods.search import Search, SearchSettings
from lwdc.stages import train_stage
from lwdc.cli import main
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.runs import load_checkpoint
from lwdc.space import expand
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, TrainingDiverged, fit

from conftest import TinyNet


@pytest.fixture
def one_thread():
    """Tiny models run several times faster in one thread on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _search(train, epochs=2, state=None, keep=None, checkpoint_every=3):
    torch.manual_seed(0)
    net = TinyNet()
    supernet = expand(net, train[0][0][:1], "minimal", seed=0)
    table = build_cost_table(get_cost_model("params"), supernet, net, train[0][0][:1])
    cfg = TrainConfig(epochs=epochs, checkpoint_every=checkpoint_every, progress=False)
    record = (lambda s, *_: keep.append(copy.deepcopy(s))) if keep is not None else None
    history = fit(supernet, Classification(), train, None, cfg, method=Search(SearchSettings(lam=0.3), table), state=state,
                  on_step=record,
                  on_epoch=record, log=lambda s: None)
    return supernet, history


def test_mid_epoch_state_resumes_to_the_uninterrupted_result(quadrants, one_thread):
    """8 batches per epoch, a state every 3: resume from epoch 1, batch 6 (plain list loader: batches skipped)."""
    train, _ = quadrants
    states = []
    full, full_history = _search(train, keep=states)
    assert [(s["epoch"], s["step"]) for s in states] == [(0, 3), (0, 6), (1, 0), (1, 3), (1, 6), (2, 0)]
    resumed, history = _search(train, state=states[4])
    for (key, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    assert history[-1].train == pytest.approx(full_history[-1].train)  # partial epoch statistics were kept


def test_diverging_loss_names_the_step_and_keeps_the_last_good_checkpoint(quadrants, tmp_path):
    train, _ = quadrants
    bad = list(train)
    bad[4] = (bad[4][0] * math.inf, bad[4][1])
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, checkpoint_every=2, progress=False, desc="pretrain")
    with pytest.raises(TrainingDiverged, match=r"pretrain: loss is nan at epoch 1, step 5; the last checkpoint"):
        train_stage("pretrain", TinyNet(), Classification(), bad, None, cfg, tmp_path, "fp", log=lambda s: None)
    state = load_checkpoint(tmp_path / "checkpoints" / "pretrain.pt", "pretrain")
    assert (state["epoch"], state["step"]) == (0, 4)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_weights_that_overflow_are_never_checkpointed(quadrants, tmp_path):
    """A finite loss with an overflowing step: the check before writing catches it, the old checkpoint stays."""
    train, _ = quadrants
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, lr=1e38, momentum=0, checkpoint_every=1, progress=False, desc="pretrain")
    with pytest.raises(TrainingDiverged, match=r"pretrain: (weights became non-finite by|loss is \w+ at) epoch 1, step"):
        train_stage("pretrain", TinyNet(), Classification(), train, None, cfg, tmp_path, "fp", log=lambda s: None)
    path = tmp_path / "checkpoints" / "pretrain.pt"
    if path.exists():
        assert all(torch.isfinite(v).all() for v in load_checkpoint(path, "pretrain")["model"].values())


def test_negative_checkpoint_interval_is_refused(quadrants):
    with pytest.raises(ValueError, match="checkpoint_every must be >= 0"):
        fit(TinyNet(), Classification(), quadrants[0], None, TrainConfig(epochs=1, checkpoint_every=-1))


# ------------------------------------------------------------------------------------------ via the CLI
QUICK = ["--model", "resnet8", "--width", "0.25", "--search-epochs", "1", "--finetune-epochs", "1",
         "--warmup-epochs", "0", "--max-batches", "2", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A finished quick run minus report.json: resuming it reads config.json and then checkpoints/search.pt."""
    run = tmp_path_factory.mktemp("bad") / "run"
    result = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    (run / "report.json").unlink()
    return run


def _tamper_search(state):
    def apply(run):
        path = run / "checkpoints" / "search.pt"
        torch.save(state(torch.load(path, weights_only=True), run), path)
    return apply


def _dropped(key):
    return lambda s, run: {k: v for k, v in s.items() if k != key}


def _write(name, data):
    return lambda run: (run / name).write_bytes(data) if isinstance(data, bytes) else (run / name).write_text(data)


def _config(**changes):
    def apply(run):
        cfg = json.loads((run / "config.json").read_text())
        cfg.update(changes)
        (run / "config.json").write_text(json.dumps(cfg))
    return apply


def _truncate(run):
    path = run / "checkpoints" / "search.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (what is wrong, how to make it, the message expected). The list in docs of issue 7 is generated from these.
BAD_RUNS = [
    # torch's own reason depends on where the cut falls (a zip-reader error, or EINVAL from a seek past the end)
    ("truncated checkpoint", _truncate, "is not a readable lwdc checkpoint ("),
    ("empty checkpoint", _write("checkpoints/search.pt", b""), "is empty (0 bytes)"),
    ("random bytes as checkpoint", _write("checkpoints/search.pt", b"\x00not a checkpoint" * 10),
     "is not a readable lwdc checkpoint"),
    ("foreign dict", lambda run: torch.save({"some": "dict"}, run / "checkpoints" / "search.pt"),
     "is not an lwdc 'search' checkpoint (found None)"),
    ("foreign tensor", lambda run: torch.save(torch.zeros(3), run / "checkpoints" / "search.pt"),
     "is not an lwdc 'search' checkpoint (found Tensor)"),
    ("pickled object torch refuses to load", lambda run: torch.save(Fraction(1, 3), run / "checkpoints" / "search.pt"),
     "is not a readable lwdc checkpoint (it holds Python objects"),
    ("another stage's checkpoint", lambda run: shutil.copy(run / "checkpoints" / "finetune.pt",
                                                           run / "checkpoints" / "search.pt"),
     "is not an lwdc 'search' checkpoint (found 'finetune')"),
    ("wrong format version", _tamper_search(lambda s, run: {**s, "version": 99}), "has format version 99, this lwdc"),
    ("no format version", _tamper_search(_dropped("version")), "has no format version, this lwdc reads version 1"),
    ("missing optimiser state", _tamper_search(_dropped("optimizer")), "lacks optimizer"),
    ("written by another number of processes", _tamper_search(lambda s, run: {**s, "world_size": 2}),
     "written by 2 process(es), this run has 1"),
    ("weights of another shape", _tamper_search(lambda s, run: {**s, "model": {
        k: torch.zeros(3) if k.endswith("weight") else v for k, v in s["model"].items()}}), "holds weights of another model"),
    ("config changed since the checkpoint", _config(lam=2.5), "written by a run with another configuration"),
    ("config.json not JSON", _write("config.json", "{lam: 1,"), "config.json is not readable JSON"),
    ("config.json empty", _write("config.json", ""), "config.json is not readable JSON"),
    ("config.json a list", _write("config.json", "[1, 2]"), "should hold a JSON object, found list"),
    ("config.json wrong type", _config(lam="heavy"), "setting 'lam': 'heavy' is not a valid float"),
    ("config.json unknown setting", _config(colour="red"), "has unknown settings colour"),
    ("config.json negative lambda", _config(lam=-1.0), "lambda must be >= 0"),
    ("config.json unknown model", _config(model_name="resnet21"), "unknown model 'resnet21'"),
    ("config.json unknown cost", _config(cost="joules"), "unknown cost model 'joules'"),
    ("report.json damaged", _write("report.json", "{"), "report.json is not readable JSON"),
    ("no config.json", lambda run: (run / "config.json").unlink(), "has no config.json"),
]


@pytest.mark.parametrize("what, damage, message", BAD_RUNS, ids=[b[0] for b in BAD_RUNS])
def test_bad_run_folder_is_refused_cleanly(interrupted_run, tmp_path, what, damage, message):
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    damage(run)
    result = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)   # a ClickException, not a crash
    assert "Traceback" not in result.output
    assert message in result.output, result.output


@pytest.mark.parametrize("args, message", [
    (["--checkpoint-every", "-1"], "Invalid value for '--checkpoint-every'"),
    (["--batch-size", "0"], "0 is not in the range x>=1"),
    (["--lr", "1e30", "--checkpoint-every", "1"], "loss is nan at epoch 1, step 2"),
])
def test_bad_settings_are_refused_cleanly(tmp_path, args, message):
    result = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(tmp_path / "r"), *args])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert message in result.output, result.output
