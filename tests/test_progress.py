"""Output for logs: plain progress lines (no carriage-return flood) when the output is not a terminal, and no
dependency warnings in what the command line prints."""
import io
import warnings

from click.testing import CliRunner

from lwdc.cli import main
from lwdc.cli.base import quiet_dependencies
from lwdc.progress import LineProgress, progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_lines_at_each_quarter_when_the_stream_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("LWDC_PROGRESS", raising=False)
    out = io.StringIO()
    bar = progress(range(100), total=100, desc="search 1/8", stream=out)
    assert isinstance(bar, LineProgress)
    bar.min_interval = 0
    bar.set_postfix(loss="1.234")
    assert list(bar) == list(range(100))
    lines = out.getvalue().splitlines()
    assert lines == ["search 1/8: 25% (25/100, 0s, loss=1.234)", "search 1/8: 50% (50/100, 0s, loss=1.234)",
                     "search 1/8: 75% (75/100, 0s, loss=1.234)"]
    assert "\r" not in out.getvalue()


def test_quick_loops_print_nothing_and_a_terminal_gets_the_bar(monkeypatch):
    monkeypatch.delenv("LWDC_PROGRESS", raising=False)
    out = io.StringIO()
    list(progress(range(50), total=50, desc="x", stream=out))       # well under min_interval
    assert out.getvalue() == ""
    assert not isinstance(progress(range(3), total=3, desc="x", stream=Tty()), LineProgress)
    quiet = io.StringIO()
    list(progress(range(3), total=3, desc="x", stream=quiet, enabled=False))
    assert quiet.getvalue() == ""
    monkeypatch.setenv("LWDC_PROGRESS", "lines")
    assert isinstance(progress(range(3), total=3, desc="x", stream=Tty()), LineProgress)


def test_resumed_loop_counts_from_where_it_starts():
    out = io.StringIO()
    bar = LineProgress(range(40, 100), 100, "finetune", initial=40, stream=out, min_interval=0)
    list(bar)
    assert [line.split(":")[1].split()[0] for line in out.getvalue().splitlines()] == ["50%", "75%"]


def test_cli_filters_dependency_warnings():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_dependencies()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
        warnings.warn("an lwdc warning stays", UserWarning)
    assert [str(w.message) for w in seen] == ["an lwdc warning stays"]


def test_cli_output_has_no_carriage_returns_or_dependency_warnings(tmp_path):
    args = ["compress", "--model", "resnet8", "--width", "0.25", "--pretrain-epochs", "1", "--search-epochs", "1",
            "--finetune-epochs", "1", "--max-batches", "2", "--batch-size", "32", "--warmup-epochs", "0.5",
            "--run-dir", str(tmp_path / "r")]                   # progress on (the default), output not a terminal
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "Warning" not in result.output
    assert "| params" in result.output and result.output.count("| params") == 1
