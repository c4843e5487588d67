"""The report's figures and summary say what happened: saliency captions inside their own rows, runs that
compressed nothing marked as such (trade-off plot, tables, summaries), latency as one paired measurement."""
from pathlib import Path

import torch

from lwdc.analysis import plots
from lwdc.analysis import report as page
from lwdc.profiling import BackendLatency
from lwdc.summary import changed_nothing, format_summary


def _report(choices, latency=True):
    before = {"params": 100, "macs": 1000, "latency_ms": 1.0, "accuracy": 50.0}
    after = {"params": 60 if set(choices.values()) != {"original"} else 100,
             "macs": 500 if set(choices.values()) != {"original"} else 1000, "latency_ms": 0.9, "accuracy": 51.0}
    r = {"before": before, "after": after, "choices": choices, "lambda": 1.0, "cost": "macs", "layers": [],
         "primary_metric": "accuracy", "wall_time_s": {"total": 1.0}, "config": {}}
    if latency:
        r["latency"] = {"batch_size": 1, "threads": 1, "backends": {
            "eager": BackendLatency("eager", [1.0, 1.0, 1.0], [0.9, 1.1, 0.95]).as_dict()}}
    return r


def test_a_run_that_changed_nothing_is_marked_in_summaries_and_tables(tmp_path):
    same, smaller = _report({"a": "original", "b": "original"}), _report({"a": "original", "b": "sep3x3"})
    assert changed_nothing(same) and not changed_nothing(smaller)
    assert "nothing was compressed" in format_summary(same)
    assert "nothing was compressed" not in format_summary(smaller)
    assert "Nothing was compressed" in page._summary(same, tmp_path, [])
    assert "Nothing was compressed" not in page._summary(smaller, tmp_path, [])


def test_report_summary_shows_the_paired_latency_with_its_range(tmp_path):
    html = page._summary(_report({"a": "sep3x3"}), tmp_path, [])
    assert "latency eager, batch 1 (ms)" in html and "0.950x [0.900–1.100] ~" in html and "75% interval" in html
    assert "alternating in one process over 3 rounds" in html and "no change was measured" in html
    old = page._summary(_report({"a": "sep3x3"}, latency=False), tmp_path, [])
    assert "single timings, not paired" in old


def test_tradeoff_plot_keeps_unchanged_runs_off_the_compressed_line(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    points = [{"lambda": 1.0, "before": {"params": 100, "macs": 1000, "accuracy": 50.0},
               "after": {"params": 60, "macs": 500, "accuracy": 49.0}, "current": True},
              {"lambda": 0.1, "before": {"params": 100, "macs": 1000, "accuracy": 50.0},
               "after": {"params": 100, "macs": 1000, "accuracy": 52.0}, "unchanged": True}]
    plots.tradeoff(points, "accuracy")
    ax = figures[0].axes[1]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["compressed"].get_xdata()) == [500]
    assert list(lines["nothing compressed"].get_xdata()) == [1000]


def test_saliency_captions_sit_inside_their_own_rows(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_png", lambda fig: figures.append(fig) or b"png")
    n = 3
    maps = {m: {w: torch.rand(n, 8, 8) for w in ("original", "compressed")} for m in ("vanilla gradient", "Grad-CAM")}
    titles = [f"class {i}\norig→a, comp→b" for i in range(n)]
    plots.saliency_images(torch.rand(n, 3, 8, 8), maps, titles)
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    first_column = [ax for ax in fig.axes if ax.get_subplotspec().colspan.start == 0]
    assert len(first_column) == n
    for i, ax in enumerate(first_column):
        label = ax.yaxis.label
        assert label.get_text() == titles[i]
        text, row = label.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert row.y0 - 1 <= text.y0 and text.y1 <= row.y1 + 1, (i, text, row)     # within its own row
        assert text.x1 <= row.x0 + 1                                                # left of the images


def test_page_text_no_longer_speaks_of_titles():
    assert "titles: true class" not in Path(page.__file__).read_text()
