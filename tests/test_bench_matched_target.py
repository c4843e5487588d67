"""bench.cifar's pruning match finds its LWDC point whether the point ran plainly or only distilled: a distilled
LWDC run with no plain twin searches for itself into its ``-kd1`` folder, and the distilled pruning run matched to
it once failed with 'search has not finished' although it had (width set, lambda 2, 2026-12-05)."""
import json
from types import SimpleNamespace

import pytest

runners = pytest.importorskip("bench.runners")
context = pytest.importorskip("bench.context")


def args(distill: float) -> SimpleNamespace:
    return SimpleNamespace(method="prune-l1-global", lam=2.0, ops="width", noise_end=0.25, cost="macs", seed=0,
                           target=None, distill=distill)


def ctx(tmp_path, distill: float) -> SimpleNamespace:
    return SimpleNamespace(args=args(distill), folder=tmp_path, schedule=SimpleNamespace(search_epochs=3),
                           log=lambda *_: None)


def finish(tmp_path, name: str, macs: int) -> None:
    (tmp_path / name).mkdir()
    (tmp_path / name / "result.json").write_text(json.dumps({"macs": macs}))


def test_a_distilled_match_finds_the_distilled_only_point_and_names_it_plainly(tmp_path):
    finish(tmp_path, "lwdc-width-lam2-noise0.25-kd1", 8_000_000)
    target, name, source = runners.matched_target(ctx(tmp_path, 1.0), 40_000_000)
    assert (target, name, source) == (8_000_000, "lwdc-width-lam2-noise0.25", "result")
    # the pruning run records matches = name + '-kd1': the LWDC point's own run name, which the report pairs by
    assert name + context.distill_label(1.0) == "lwdc-width-lam2-noise0.25-kd1"


def test_the_pruning_runs_own_distillation_comes_first_then_the_plain_twin(tmp_path):
    finish(tmp_path, "lwdc-width-lam2-noise0.25", 9_000_000)
    assert runners.matched_target(ctx(tmp_path, 1.0), 40_000_000)[0] == 9_000_000    # plain twin, same search
    finish(tmp_path, "lwdc-width-lam2-noise0.25-kd1", 8_000_000)
    assert runners.matched_target(ctx(tmp_path, 1.0), 40_000_000)[0] == 8_000_000
    assert runners.matched_target(ctx(tmp_path, 0.0), 40_000_000)[0] == 9_000_000    # a plain match: plain run


def test_no_finished_run_names_both_folders_and_the_command(tmp_path):
    with pytest.raises(SystemExit, match=r"lwdc-width-lam2-noise0.25-kd1 or .*lwdc-width-lam2-noise0.25\): run "
                                         r"--method lwdc --lam 2 --ops width --noise-end 0.25 first"):
        runners.lwdc_source(args(1.0), tmp_path, SimpleNamespace(search_epochs=3))
