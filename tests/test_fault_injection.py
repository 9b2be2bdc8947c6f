"""Faults injected into ``pyro-vaeflow train`` run as a user runs it (``tests/fault_injection.py``):
a fast subset here (a full disk and a corrupt checkpoint are also tried in-process by
``tests/test_reliability.py``), the whole campaign as a slow test."""

from __future__ import annotations

import time

import pytest

from tests import fault_injection as faults


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[dict, float]:
    """The weights of an uninterrupted run, and its seconds."""
    run_dir = tmp_path_factory.mktemp("reference")
    began = time.perf_counter()
    status, out = faults.finish(faults.start(run_dir))
    assert status == 0, out
    return faults.weights(run_dir), time.perf_counter() - began


@pytest.mark.parametrize(
    ("case", "argument"),
    [
        (faults.kill_in_write_case, "vae.ckpt"),
        (faults.term_case, 0.6),
        pytest.param(faults.disk_full_case, "checkpoint", marks=pytest.mark.slow),
        pytest.param(faults.corrupt_case, "truncated", marks=pytest.mark.slow),
    ],
    ids=["kill-in-a-checkpoint-write", "sigterm", "disk-full", "corrupt-checkpoint"],
)
def test_a_hurt_run_resumes_to_the_same_weights(tmp_path, reference, case, argument):
    weights, seconds = reference
    if case is faults.term_case:
        argument *= seconds  # in the middle of the run
    outcome = case(tmp_path / "run", weights, argument)
    assert outcome.well, outcome.note
    assert not outcome.missed, outcome.note
    assert outcome.lost == []
    if case is faults.term_case:
        assert "exit 143" in outcome.note  # a graceful stop, not the default action


@pytest.mark.slow
def test_the_campaign_ends_every_case_well():
    outcomes = faults.campaign(kills=20, terms=10)
    print(faults.summary(outcomes))
    assert all(outcome.well for outcome in outcomes), [o.note for o in outcomes if not o.well]
    assert sum(len(outcome.lost) for outcome in outcomes) == 0
