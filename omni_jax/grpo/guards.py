"""What stops a run on purpose: preemption (SIGTERM) and a run whose updates are all skipped.

`Preemption` is installed at the very start of a run: SIGTERM (TPU maintenance, `launch.tpu
stop`, a scheduler) only sets a flag; the warm-start, the GRPO loop and the SFT loop check it,
save, and the process exits with PREEMPTED_EXIT_CODE, so a supervisor can tell "saved, run me
again" from a finished run (0) and a failure (1). `SkippedUpdates` stops a run whose updates have been skipped
(non-finite loss or gradient) too many times in a row, instead of letting it go on quietly.
"""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("omni_jax.train")

# EX_TEMPFAIL of sysexits.h: a temporary failure; the same command resumes from the saved step.
PREEMPTED_EXIT_CODE = 75


class Preemption:
    """SIGTERM sets `requested`; the loops checkpoint and return (see the module docstring)."""

    def __init__(self):
        self.requested = False
        try:
            signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (tests calling run() from a thread)
            pass

    _installed = None

    @classmethod
    def install(cls) -> "Preemption":
        """The process's one handler (made on the first call): train.py installs it before anything slow."""
        if cls._installed is None:
            cls._installed = cls()
        return cls._installed

    def _handle(self, *_):
        if not self.requested:
            log.warning("SIGTERM received: saving at the end of this step, then exiting with status %d",
                        PREEMPTED_EXIT_CODE)
        self.requested = True


class TooManySkippedUpdates(RuntimeError):
    """Updates skipped (non-finite loss or gradient) `limit` times in a row."""


class SkippedUpdates:
    """Counts consecutive skipped updates; raises TooManySkippedUpdates at `limit` (0: never)."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = int(limit), 0

    def update(self, step: int, skipped: bool, total: int) -> None:
        """After each optimizer step: step (1-based), whether it was skipped, the run's total skipped."""
        if not skipped:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        log.warning("step %d: update skipped (non-finite loss or gradient); %d skipped in a row, %d in this run",
                    step, self.in_a_row, total)
        if self.limit and self.in_a_row >= self.limit:
            raise TooManySkippedUpdates(
                f"the last {self.in_a_row} updates (up to step {step}) were all skipped for a non-finite loss or "
                "gradient: the run is not learning. The checkpoints hold the weights before the first of them. "
                "Look for NaN / inf in the weights (a damaged init), a too high learning rate, or bad inputs; "
                f"max_consecutive_skipped_updates={self.limit} sets this limit (0 never stops)")
