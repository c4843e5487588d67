"""bench.report_landmarks renders the landmarks section from bench.landmarks' JSON rows (synthetic rows here)."""
import json

from bench import report_landmarks


def _row(variant, fold, rmse, **extra):
    metrics = {"rmse_px": rmse, "mean_error_px": rmse * 0.9, "nme": rmse * 0.8, "pck": 10.0, "visible": 96.0,
               "error_px/snout": rmse, "error_px/tailbase": rmse * 0.5}
    return {"set": "openfield", "fold": fold, "variant": variant, "quick": False, "metrics": metrics,
            "params": 19888, "macs": 12943616, "latency_ms_onnxruntime": 0.3, "train_seconds": 40.0,
            "settings": {"model": "resnet8", "width": 0.5, "size": 64, "epochs": 60, "optimizer": "adamw",
                         "lr": 0.003, "batch_size": 16, "augment": "none"}, **extra}


def _write(folder, row, name=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or f"fold{row['fold']}_{row['variant']}.json")).write_text(json.dumps(row))


def test_section_renders_tables_and_comparisons(tmp_path):
    out = tmp_path / "landmarks"
    c8 = {"minmax": {"flash_bytes": 11640, "peak_ram_bytes": 114688, "calib_frames": 64, "diff_input_px_max": 0.4,
                     "diff_input_px_mean": 0.1, "within_1px": True, "metrics": {"rmse_px": 31.0}},
          "mse+bias": {"flash_bytes": 11640, "peak_ram_bytes": 114688, "calib_frames": 64, "diff_input_px_max": 1.4,
                       "diff_input_px_mean": 0.5, "within_1px": False, "metrics": {"rmse_px": 31.5}}}
    for fold in (0, 1):
        _write(out, _row("l2", fold, 40.0 + fold))
        _write(out, _row("rwing", fold, 30.0 + fold))
        _write(out, _row("rwing-balance", fold, 32.0))
        _write(out, _row("rwing-transfer", fold, 28.0, transfer={"epochs": 10, "data": "cifar10-subset",
                                                                "test_accuracy": 55.0}))
        _write(out, _row("lwdc-macs0.6x", fold, 31.0 + fold, macs=7_700_000, macs_ratio=0.595, c_int8=c8,
                         choices={"a": "skip", "b": "original"}, search_seconds=20, finetune_seconds=10))
    _write(out, {**_row("l2", 2, 999.0), "quick": True}, "fold2_l2_quick.json")   # quick rows are left out
    body = report_landmarks.section(tmp_path)
    assert body.startswith("## Landmarks")
    assert "| L2 | 2 | 40.5 ± 0.7 (40.0, 41.0) |" in body
    assert "999" not in body
    assert "RWing against L2**: RWing 30.5 px against L2 40.5 px RMSE (-10.0 px, -24.7%; lower on 2 of 2 folds)" in body
    assert "Pose balancing" in body and "Transfer from CIFAR-10 against scratch" in body
    assert "0.595-0.595x" in body and "**met**" in body
    assert "max 0.40" in body and "within 1 px on 2 of 2 folds" in body
    assert "mse calibration + bias correction" in body and "within 1 px on 0 of 2 folds" in body
    assert "every point of every test frame**: **met** with minmax on all 2 folds" in body
    assert "2.81 px" in body


def test_section_empty_without_rows(tmp_path):
    assert report_landmarks.section(tmp_path) == ""
    assert report_landmarks.MARKERS == ("<!-- bench:landmarks:start -->", "<!-- bench:landmarks:end -->")
