"""Behaviour kept: the fixed small run of tests/behaviour.py still yields the digest recorded before the core
redesign (same choices, the same weights to the bit, the same metrics) by the same kind of CPU."""
import pytest
import torch
from behaviour import RECORDED, run_and_digest


def test_fixed_run_reproduces_the_recorded_digest(tmp_path):
    isa = torch.backends.cpu.get_cpu_capability()
    if isa not in RECORDED:
        pytest.skip(f"no digest recorded for {isa} CPUs: record one with lwdc at 6772366 (tests/behaviour.py)")
    assert run_and_digest(tmp_path / "run") == RECORDED[isa]
