"""The command line end to end on the shipped subset (a few batches), and its errors on bad input."""
import json

import pytest
import torch
from click.testing import CliRunner

from lwdc.cli import main

QUICK = ["--model", "resnet8", "--width", "0.5", "--pretrain-epochs", "1", "--search-epochs", "1",
         "--finetune-epochs", "1", "--max-batches", "3", "--batch-size", "32", "--no-progress", "--warmup-epochs", "0.5"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "quick"
    result = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run, result.output


def test_compress_writes_a_complete_run_folder(finished_run):
    run, output = finished_run
    for name in ("config.json", "report.json", "model.pt2", "model_state.pt", "checkpoints/search.pt",
                 "checkpoints/finetune.pt", "checkpoints/pretrain.pt"):
        assert (run / name).exists(), name
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"
    report = json.loads((run / "report.json").read_text())
    assert set(report["choices"]) == {row["name"] for row in report["layers"]}
    assert report["lambda"] == 1.0 and report["derive_max_abs_diff"] <= 1e-5
    for key in ("params", "macs", "latency_ms", "accuracy"):
        assert key in report["before"] and key in report["after"]
    assert "| params" in output and "search    epoch   1/1" in output
    model = torch.export.load(str(run / "model.pt2")).module()
    assert model(torch.randn(5, 3, 32, 32)).shape == (5, 10)


def test_resume_of_a_finished_run_does_not_rerun(finished_run):
    run, _ = finished_run
    before = (run / "report.json").read_text()
    result = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert result.exit_code == 0 and "finished earlier" in result.output
    assert (run / "report.json").read_text() == before


def test_existing_run_folder_is_not_overwritten(finished_run):
    run, _ = finished_run
    result = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run)])
    assert result.exit_code != 0 and "--resume" in result.output


@pytest.mark.parametrize("args, message", [
    (["--ops", "original,sep3x3,warp9"], "unknown operator 'warp9'"),
    (["--lam", "-0.5"], "lambda must be >= 0"),
    (["--model", "resnet21"], "unknown model 'resnet21'"),
    (["--noise-end", "0"], "noise_end must be in (0, 1]"),
])
def test_bad_settings_fail_before_writing_anything(tmp_path, args, message):
    run = tmp_path / "bad"
    result = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert not (run / "report.json").exists()


def test_data_path_without_layout_names_the_layouts(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("nothing here")
    result = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(tmp_path / "r"), "--data",
                                       str(tmp_path / "junk")])
    assert result.exit_code != 0
    assert "cifar-10-batches-py" in result.output and "train/<class>" in result.output
    assert not (tmp_path / "r" / "report.json").exists()


def test_profile_and_ops_commands(finished_run):
    run, _ = finished_run
    out = CliRunner().invoke(main, ["profile", "--model", "resnet20", "--json"])
    assert out.exit_code == 0
    assert json.loads(out.output)["params"] == 272474
    out = CliRunner().invoke(main, ["profile", "--run", str(run)])
    assert out.exit_code == 0 and "MACs" in out.output
    out = CliRunner().invoke(main, ["ops"])
    assert "default" in out.output and "sep{k}x{k}" in out.output


def test_run_folder_from_before_the_noise_setting_resumes_under_its_old_behaviour(tmp_path):
    """A config.json without noise_end was written when the noise was constant (1): resuming must not read it as
    today's default (0.25), which would refuse the folder's own checkpoints as written under other settings."""
    run = tmp_path / "old"
    first = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run), "--noise-end", "1"])
    assert first.exit_code == 0, first.output
    _as_written_before(run, "noise_end")
    (run / "report.json").unlink()
    (run / "checkpoints" / "finetune.pt").unlink()
    result = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "search: finished earlier" in result.output and "finetune  epoch   1/1" in result.output


def test_share_chains_the_second_method_after_a_finished_run(finished_run, tmp_path):
    """LWDC then weight sharing: the compressed model of the run, read as data, on the run's own data; the
    result keeps LWDC's MACs and stores at most its codebook's values per layer."""
    run, _ = finished_run
    out = tmp_path / "shared"
    result = CliRunner().invoke(main, ["share", str(run), "--out", str(out), "--max-batches", "2", "--ladder", "2",
                                       "--budget", "100", "--finetune-epochs", "1"])
    assert result.exit_code == 0, result.output
    first, second = (json.loads((p / "report.json").read_text()) for p in (run, out))
    assert second["method"] == "share" and second["before"]["macs"] == first["after"]["macs"]
    assert second["after"]["macs"] == first["after"]["macs"]                  # sharing changes storage, not MACs
    assert second["share"]["compression"] > 10 and "weights:" in result.output
    state = torch.load(out / "model_state.pt", weights_only=True)["state_dict"]
    convs = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    assert convs and all(torch.unique(w[w != 0]).numel() <= 2 for w in convs)
    bad = CliRunner().invoke(main, ["share", str(run), "--out", str(tmp_path / "x"), "--ladder", "two"])
    assert bad.exit_code != 0 and "--ladder 'two'" in bad.output and not (tmp_path / "x").exists()
    # the report shows the greedy steps, one row per layer with its codebook; no LWDC sections on a share run
    page_dir = tmp_path / "page"
    shown = CliRunner().invoke(main, ["report", str(out), "--out", str(page_dir), "--samples", "1", "--cka-samples",
                                      "0", "--probe-train", "0"])
    assert shown.exit_code == 0, shown.output
    page = (page_dir / "report.html").read_text()
    assert 'id="weights"' in page and 'id="architecture"' not in page and "Method <code>share</code>" in page
    for row in second["share"]["layers"]:
        assert f"<td class=\"l\"><code>{row['layer']}</code></td>" in page
    # the float C stores the shared layers as codebooks: less flash than dense, same answers (checked on export)
    flash = {}
    for storage in ("dense", "on-the-fly"):
        made = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / storage), "--eval-samples", "0",
                                         "--weight-storage", storage])
        assert made.exit_code == 0, made.output
        flash[storage] = json.loads((tmp_path / storage / "deploy.json").read_text())["flash_bytes"]
    assert "stored as codebook + packed codes" in made.output and flash["on-the-fly"] < flash["dense"] / 4
    refused = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "q"), "--int8",
                                        "--weight-storage", "startup"])
    assert refused.exit_code != 0 and "--weight-storage" in refused.output


def test_a_pretrained_checkpoint_from_before_a_setting_existed_still_resumes(tmp_path):
    """An older lwdc wrote config.json and fingerprinted checkpoints/pretrain.pt over the settings it knew. Resumed
    now, a setting added since is filled in at its legacy value (budget_signal, budget_ramp), not today's default
    (the search checkpoint of this target run would be refused under argmax or a ramp); and it must not enter the
    pretrained checkpoint's fingerprint, or every older folder's pretraining looks foreign and is refused."""
    run = tmp_path / "old"
    first = CliRunner().invoke(main, ["compress", *QUICK, "--run-dir", str(run), "--target", "macs=0.6x",
                                      "--budget-signal", "expected", "--budget-ramp", "0"])
    assert first.exit_code == 0, first.output
    _as_written_before(run, "budget_signal", "budget_ramp")
    (run / "report.json").unlink()
    (run / "checkpoints" / "finetune.pt").unlink()
    result = CliRunner().invoke(main, ["compress", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert "finetune  epoch   1/1" in result.output


def _as_written_before(run, *added_later: str) -> None:
    """Make ``run`` look written by an lwdc that lacked the settings ``added_later``: config.json without them, and
    checkpoints/pretrain.pt fingerprinted over the settings that version knew (search and fine-tuning checkpoints
    leave legacy values out of their fingerprints themselves)."""
    from lwdc.cli.compress import _pretrain_fingerprint

    config = json.loads((run / "config.json").read_text())
    for key in added_later:
        del config[key]
    (run / "config.json").write_text(json.dumps(config))
    path = run / "checkpoints" / "pretrain.pt"
    state = torch.load(path, weights_only=True)
    state["fingerprint"] = _pretrain_fingerprint({k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    torch.save(state, path)
