"""Latency as every command reports it (lwdc.profiling.compare_latency): alternating rounds, median of per-round
ratios and their range. Only one test here times anything: an unchanged architecture against itself under an
artificial load, whose ratio interval must contain 1."""
import copy
import threading

import pytest
import torch

from lwdc.profiling import BackendLatency, compare_latency, default_backends, median_interval, profile
from lwdc.summary import format_latency

from conftest import TinyNet


def test_statistic_is_the_median_of_per_round_ratios_with_their_range():
    t = BackendLatency("eager", a_rounds=[2.0, 4.0, 2.0, 2.0, 8.0], b_rounds=[1.0, 4.0, 3.0, 1.0, 4.0])
    assert t.ratios == [0.5, 1.0, 1.5, 0.5, 0.5]
    assert t.ratio == 0.5 and t.ratio_range == (0.5, 1.5) and t.within_noise
    assert t.a_ms == 2.0 and t.b_ms == 3.0      # medians of the rounds, not what the ratio is taken from
    faster = BackendLatency("eager", a_rounds=[2.0, 2.2, 2.1], b_rounds=[1.0, 1.2, 1.0])
    assert not faster.within_noise and faster.ratio_range[1] < 1
    d = faster.as_dict()
    assert d["within_noise"] is False and d["rounds"] == 3 and d["ratio_range"] == list(faster.ratio_range)


def test_interval_is_the_sign_test_interval_of_the_median():
    # 99%: 9 rounds -> the whole range (coverage 1 - 2/512); 15 rounds -> 3rd lowest to 3rd highest (99.26%)
    assert median_interval(list(range(9)), 0.99) == (0, 8, 1 - 2 / 512)
    lo, hi, cover = median_interval(list(range(15)), 0.99)
    assert (lo, hi) == (2, 12) and cover == pytest.approx(1 - 2 * (1 + 15 + 105) / 2 ** 15)
    assert median_interval([3.0], 0.99)[:2] == (3.0, 3.0)
    # one disturbed round among 15 does not decide the verdict; the whole range would have
    ratios = [0.8] * 14 + [1.3]
    t = BackendLatency("eager", [1.0] * 15, ratios)
    assert t.ratio_range[1] > 1 and t.ratio_interval == (0.8, 0.8) and not t.within_noise
    # a consistent 1% is below what a shared machine resolves: no measurable change
    assert BackendLatency("eager", [1.0] * 15, [0.99] * 15).within_noise


def test_copies_of_one_model_are_timed_round_by_round():
    """Two copies of one model, as an unchanged architecture after compression is (no timing asserted beyond
    sanity: copies may differ by a percent through memory placement, which ``min_effect`` absorbs)."""
    model = TinyNet(width=16).eval()
    result = compare_latency(model, copy.deepcopy(model), torch.randn(1, 3, 16, 16), rounds=15,
                             round_seconds=0.01, warmup_seconds=0.05, backends=("eager",))
    t = result.eager
    assert t.rounds == 15 and len(t.ratios) == 15 and all(r > 0 for r in t.ratios)


def test_summary_lines_say_when_the_spread_is_larger_than_the_difference():
    noisy = BackendLatency("eager", [1.0, 1.0, 1.0], [0.9, 1.2, 0.95]).as_dict()
    clear = BackendLatency("onnxruntime", [1.0, 1.0, 1.0], [0.5, 0.6, 0.55]).as_dict()
    assert noisy["ratio_interval"] == [0.9, 1.2] and noisy["interval_confidence"] == 0.75
    lines = format_latency({"backends": {"eager": noisy, "onnxruntime": clear}, "batch_size": 1, "threads": 1})
    text = "\n".join(lines)
    assert "alternating over 3 rounds" in text
    assert "eager" in text and "no measurable change" in lines[1]
    assert lines[2].endswith("compressed faster") and "[0.500-0.600]" in lines[2]


class Counted(torch.nn.Module):
    def __init__(self, name, log):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x + 1


def test_models_alternate_and_swap_order_every_round():
    log = []
    compare_latency(Counted("a", log), Counted("b", log), torch.zeros(1, 3), rounds=4, backends=("eager",),
                    round_seconds=0, warmup_seconds=0, min_repeats=2, max_repeats=2)
    timed = log[-16:]          # after each model's warm-up (3 calls) and repeat estimate (3 calls)
    blocks = ["".join(timed[i:i + 2]) for i in range(0, 16, 2)]
    assert blocks == ["aa", "bb", "bb", "aa", "aa", "bb", "bb", "aa"]


def test_profile_reports_the_median_and_range_over_rounds():
    p = profile(TinyNet(), torch.randn(1, 3, 16, 16), rounds=3)
    lo, hi = p.latency_range_ms
    assert lo <= p.latency_ms <= hi and p.latency["backends"]["eager"]["rounds"] == 3


def test_unchanged_architecture_against_itself_under_load_has_an_interval_containing_one():
    """The model against itself while a busy thread competes for the CPU (and the GIL) the whole time. Each
    round times both sides moments apart, in alternating order, so the load favours neither and the per-round
    ratios scatter around 1. The
    interval is the sign test's: with no real difference it misses 1 with probability below 1 - 0.9999 (31
    rounds: the 5th lowest to the 5th highest ratio), the statistic the summaries show at 99% over 15 rounds."""
    torch.manual_seed(0)
    model = TinyNet(width=16).eval()
    stop = threading.Event()

    def busy():
        x = 0
        while not stop.is_set():
            x = (x * 31 + 7) % 1000003

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        result = compare_latency(model, model, torch.randn(1, 3, 16, 16), rounds=31, round_seconds=0.01,
                                 warmup_seconds=0.05, confidence=0.9999)
    finally:
        stop.set()
        thread.join()
    assert set(result.backends) == set(default_backends())
    for name, t in result.backends.items():
        lo, hi = t.ratio_interval
        assert lo <= 1.0 <= hi, (name, sorted(t.ratios))
        assert t.within_noise and 0.5 < t.ratio < 2.0


@pytest.mark.skipif("onnxruntime" not in default_backends(), reason="onnxruntime not installed")
def test_a_backend_that_cannot_export_is_left_out_with_a_note():
    class Opaque(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy() * 2)      # not traceable into ONNX

    result = compare_latency(Opaque(), None, torch.randn(1, 4), rounds=2, round_seconds=0, warmup_seconds=0)
    assert "eager" in result.backends
    if "onnxruntime" not in result.backends:
        assert any(n.startswith("onnxruntime not timed") for n in result.notes)


def test_without_onnxruntime_installed_the_summary_says_so(monkeypatch):
    """Regression: a fresh `pip install -e .` (no export extra) printed eager latency only, silently."""
    import lwdc.profiling as profiling
    monkeypatch.setattr(profiling, "default_backends", lambda: ("eager",))
    net = TinyNet().eval()
    result = compare_latency(net, copy.deepcopy(net), torch.randn(1, 3, 8, 8), rounds=2, round_seconds=0,
                             warmup_seconds=0)
    assert set(result.backends) == {"eager"}
    assert result.notes == ["onnxruntime not timed: it is not installed (pip install 'lwdc[export]')"]
    assert any("pip install 'lwdc[export]'" in line for line in format_latency(result.as_dict()))
