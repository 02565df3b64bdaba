"""The run's guards: consecutive skipped updates stop a run; SIGTERM only sets a flag."""

import os
import signal

import pytest

from omni_jax.grpo import guards


def test_consecutive_skipped_updates_stop_the_run(caplog):
    g = guards.SkippedUpdates(3)
    for step, skipped in enumerate([True, True, False, True, True], start=1):  # never 3 in a row
        g.update(step, skipped, total=step)
    assert "2 skipped in a row" in caplog.text
    with pytest.raises(guards.TooManySkippedUpdates, match=r"the last 3 updates \(up to step 6\) were all skipped"):
        g.update(6, True, total=5)


def test_zero_never_stops():
    g = guards.SkippedUpdates(0)
    for step in range(1, 100):
        g.update(step, True, total=step)


def test_sigterm_sets_the_flag_and_the_process_goes_on():
    before = signal.getsignal(signal.SIGTERM)
    try:
        p = guards.Preemption()
        os.kill(os.getpid(), signal.SIGTERM)
        assert p.requested
    finally:
        signal.signal(signal.SIGTERM, before)
    assert guards.PREEMPTED_EXIT_CODE not in (0, 1)
