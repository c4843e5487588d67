"""The ``device`` setting: resolution and its errors, CPU-only checkpoints, and (on a CUDA machine) a GPU run.

Tests parametrised over ``DEVICES`` run on CUDA too where a GPU is visible; the ones that need its absence skip.
"""
import json

import pytest
import torch
from click.testing import CliRunner

from lwdc import compress
from lwdc.api import CompressConfig, compress_fingerprint
from lwdc.cli import main
from lwdc.costs import build_cost_table, get_cost_model
from lwdc.methods.search import Search, SearchSettings
from lwdc.device import resolve_device, to_cpu
from lwdc.runs import load_checkpoint
from lwdc.space import expand
from lwdc.tasks import Classification
from lwdc.train import TrainConfig, fit

from conftest import TinyNet

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
no_cuda_only = pytest.mark.skipif(CUDA, reason="checks the error given where no CUDA device is visible")
SETTINGS = dict(ops="minimal", lam=1.0, warmup_epochs=0.5, search_epochs=2, finetune_epochs=2, progress=False)
NO_CUDA = "no CUDA device is visible"


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _compress(quadrants, **overrides):
    train, val = quadrants
    torch.manual_seed(0)
    return compress(TinyNet(), train, val, log=lambda s: None, **{**SETTINGS, **overrides})


def test_resolve_device(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == (torch.device("cuda", torch.cuda.current_device()) if CUDA
                                      else torch.device("cpu"))
    assert resolve_device("CPU") == resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="CPU or CUDA only"):
        resolve_device("mps")


@no_cuda_only
def test_cuda_without_cuda_is_refused_before_anything_runs(quadrants, tmp_path, monkeypatch):
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"--device {spec}: {NO_CUDA} .*use --device cpu"):
            resolve_device(spec)
    with pytest.raises(ValueError, match=NO_CUDA):
        _compress(quadrants, device="cuda", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    net = TinyNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=NO_CUDA):
        fit(net, Classification(), quadrants[0], None, TrainConfig(epochs=1, device="cuda", progress=False))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # under torchrun the device is checked before joining the process group (which would wait for the others)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    from lwdc import distributed as dist
    with pytest.raises(ValueError, match=NO_CUDA):
        dist.init_from_env(device="cuda")
    assert not torch.distributed.is_initialized()


@no_cuda_only
def test_cli_cuda_without_cuda_fails_cleanly(tmp_path):
    quick = ["--model", "resnet8", "--width", "0.5", "--search-epochs", "1", "--finetune-epochs", "1",
             "--max-batches", "2", "--no-progress"]
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["compress", *quick, "--run-dir", str(run), "--device", "cuda"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert NO_CUDA in result.output and "Traceback" not in result.output
    assert not run.exists()
    # a folder started with --device cuda: resuming without CUDA names the problem, and --device overrides it
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"device": "cuda", "lam": -0.5}))   # the rest: defaults
    result = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert result.exit_code == 1 and NO_CUDA in result.output, result.output
    result = CliRunner().invoke(main, ["compress", "--resume", str(run), "--device", "cpu"])
    assert result.exit_code == 1 and "lambda must be >= 0" in result.output, result.output  # past the device check
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_explicit_cpu_is_bit_identical_to_the_default_here(quadrants):
    """On a machine without CUDA "auto" is the CPU: naming it must not change a single bit of the result."""
    if CUDA:
        pytest.skip("auto means cuda here")
    quick = dict(search_epochs=1, finetune_epochs=1, max_batches=4)
    default, explicit = _compress(quadrants, **quick), _compress(quadrants, device="cpu", **quick)
    a, b = default.model.state_dict(), explicit.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert default.choices == explicit.choices
    strip = lambda log: [{k: v for k, v in e.items() if k != "seconds"} for e in log]   # noqa: E731
    for stage in ("search", "finetune"):
        assert strip(default.report["history"][stage]) == strip(explicit.report["history"][stage])
    assert explicit.report["device"] == "cpu"


def test_noise_end_at_its_legacy_value_keeps_older_fingerprints():
    """noise_end = 1 (and method = lwdc) is the behaviour before the setting existed: checkpoints written then
    must still resume."""
    from dataclasses import asdict

    from lwdc.stages import config_fingerprint
    cfg = CompressConfig(noise_end=1.0)
    dropped = ("checkpoint_every", "progress", "device", "noise_end", "method", "budgets", "budget_rate",
               "budget_tolerance", "budget_stiffness", "gate_travel", "gate_optimizer", "budget_ramp",
               "share", "optimizer", "fill_limits", "distill", "distill_temperature",
               "distill_search", "budget_signal")  # added later, at legacy values (budget_signal: read only by budgets)
    older = {**{k: v for k, v in asdict(cfg).items() if k not in dropped}, "lam": 1.0}   # lam None meant 1.0
    assert compress_fingerprint(cfg) == config_fingerprint(older)
    assert compress_fingerprint(CompressConfig()) != compress_fingerprint(cfg)      # the default, 0.25, differs


def test_the_budget_signal_ties_only_runs_with_budgets_and_older_ones_resume_under_the_expected_law():
    """A checkpoint written before ``budget_signal`` existed ran the expected law: it resumes under that value. A
    run without budgets never reads the signal, so its checkpoints resume whatever the signal."""
    assert compress_fingerprint(CompressConfig(lam=1.0)) == compress_fingerprint(
        CompressConfig(lam=1.0, budget_signal="expected"))
    target = {"budgets": {"macs": "0.5x"}}
    older = CompressConfig(**target, budget_signal="expected")
    assert compress_fingerprint(CompressConfig(**target)) != compress_fingerprint(older)
    from dataclasses import asdict

    from lwdc.stages import config_fingerprint
    from lwdc.api import LEGACY_DEFAULTS
    written_then = {k: v for k, v in {**asdict(older), "lam": 0.0}.items()
                    if k not in ("checkpoint_every", "progress", "device", "budget_signal")
                    and not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}
    assert compress_fingerprint(older) == config_fingerprint(written_then)
    with pytest.raises(ValueError, match="budget_signal 'mean': choose one of argmax, expected"):
        CompressConfig(budget_signal="mean").validate()


def test_the_budget_ramp_ties_only_runs_with_budgets_and_unramped_ones_keep_their_fingerprint():
    """The ramp became a default (0.5) after budget runs had searched without one: such a run's checkpoints keep
    the fingerprint they were written with (no ramp is the legacy value); a run without budgets never reads the
    ramp, so its checkpoints resume whatever the setting; a budget run at another ramp is another search."""
    assert CompressConfig().budget_ramp == 0.5
    assert compress_fingerprint(CompressConfig(lam=1.0)) == compress_fingerprint(CompressConfig(lam=1.0, budget_ramp=0.5))
    target = {"budgets": {"macs": "0.5x"}}
    assert compress_fingerprint(CompressConfig(**target)) != compress_fingerprint(CompressConfig(**target, budget_ramp=0.0))
    from dataclasses import asdict

    from lwdc.api import LEGACY_DEFAULTS
    from lwdc.stages import config_fingerprint
    unramped = CompressConfig(**target, budget_ramp=0.0)
    written_then = {k: v for k, v in {**asdict(unramped), "lam": 0.0}.items()
                    if k not in ("checkpoint_every", "progress", "device", "budget_ramp")
                    and not (k in LEGACY_DEFAULTS and v == LEGACY_DEFAULTS[k])}
    assert compress_fingerprint(unramped) == config_fingerprint(written_then)
    with pytest.raises(ValueError, match="budget_ramp in \\[0, 1\\]"):
        CompressConfig(budget_ramp=1.5).validate()


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_noise_end_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="noise_end"):
        CompressConfig(noise_end=bad).validate()


def test_device_is_not_part_of_the_checkpoint_fingerprint():
    prints = {compress_fingerprint(CompressConfig(device=d)) for d in ("auto", "cpu", "cuda", "cuda:1")}
    assert len(prints) == 1
    assert compress_fingerprint(CompressConfig(lam=2.0)) not in prints


def test_to_cpu_keeps_cpu_tensors_and_state_dict_metadata():
    state = TinyNet().state_dict()
    moved = to_cpu({"model": state, "rest": [torch.ones(2), (3, "x")]})
    assert all(moved["model"][k] is v for k, v in state.items())      # nothing copied on the CPU
    assert moved["model"]._metadata == state._metadata                 # load_state_dict reads module versions
    assert moved["rest"][1] == (3, "x")


@pytest.mark.parametrize("device", DEVICES)
def test_training_states_hold_cpu_tensors_and_model_comes_back(quadrants, device):
    train, val = quadrants
    torch.manual_seed(0)
    net = TinyNet()
    example = train[0][0][:1]
    supernet = expand(net, example, "minimal")
    table = build_cost_table(get_cost_model("macs"), supernet, net, example)
    states = []
    cfg = TrainConfig(epochs=2, checkpoint_every=3, progress=False, device=device)
    fit(supernet, Classification(), train, val, cfg, method=Search(SearchSettings(lam=0.5, bn_batches=2), table),
        on_step=states.append,
        on_epoch=lambda s, _e: states.append(s), log=lambda s: None)
    assert len(states) == 2 * 2 + 2                                    # 8 batches an epoch: after 3, 6 and the end
    devices = {t.device.type for s in states for t in _tensors(s)}
    assert devices == {"cpu"}
    assert {p.device.type for p in supernet.parameters()} == {"cpu"}   # handed back where it came from
    final = states[-1]["model"]
    assert all(torch.equal(final[k], v) for k, v in supernet.state_dict().items())


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_gpu_compress_derives_exactly_and_resumes_on_cpu(quadrants, tmp_path):
    """Run on a GPU machine: compress on cuda, stop after the first search epoch, finish on the CPU."""
    reference = _compress(quadrants, device="cuda", run_dir=tmp_path / "gpu")
    assert reference.report["device"].startswith("cuda")
    assert reference.report["derive_max_abs_diff"] <= 1e-5
    assert {p.device.type for p in reference.model.parameters()} == {"cpu"}
    for stage in ("search", "finetune"):
        state = load_checkpoint(tmp_path / "gpu" / "checkpoints" / f"{stage}.pt", stage)
        assert {t.device.type for t in _tensors(state)} == {"cpu"}

    class Stop(Exception):
        pass

    def stop(line):
        if line.startswith("search    epoch   1/2"):
            raise Stop

    train, val = quadrants
    torch.manual_seed(0)
    with pytest.raises(Stop):
        compress(TinyNet(), train, val, log=stop, device="cuda", run_dir=tmp_path / "cut", **SETTINGS)
    resumed = _compress(quadrants, device="cpu", run_dir=tmp_path / "cut")
    assert resumed.report["derive_max_abs_diff"] <= 1e-5
    assert resumed.choices.keys() == reference.choices.keys()
