"""bench.width_align: the block pairs it times, their MACs and the JSON it writes (timings are not asserted)."""
import json

import pytest

from bench import width_align


def test_inner_widths_are_the_width_sets_and_the_multiples_of_16():
    assert width_align.inner_widths(16) == [12, 8, 4]
    assert width_align.inner_widths(32) == [24, 16, 8]
    assert width_align.inner_widths(64) == [48, 32, 16]


@pytest.mark.filterwarnings("ignore")
def test_it_writes_every_pair_with_its_macs_ratio_and_a_consistent_speed_ratio(tmp_path):
    out = tmp_path / "w.json"
    width_align.main(["--rounds", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["channels"], r["inner"]) for r in rows] == [(16, 12), (16, 8), (16, 4), (32, 24), (32, 16), (32, 8),
                                                         (64, 48), (64, 32), (64, 16)]
    for r in rows:
        # the two convolutions' MACs scale with the inner width, biases aside
        assert r["macs_ratio"] == pytest.approx(r["inner"] / r["channels"], abs=2e-3)
        assert r["aligned16"] == (r["inner"] % 16 == 0)
        expected = (1 - r["ort_ms"] / r["full_ms"]) / (1 - r["macs_ratio"])
        assert r["speed_ratio"] == pytest.approx(expected, abs=0.02)
