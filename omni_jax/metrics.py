"""Where training metrics go: `metrics.jsonl`, TensorBoard event files, and PNG charts.

Each line of `<workdir>/metrics.jsonl` is one JSON object with `step` and flat names
(`reward/total/mean`, `kl`, `time/step_s`, ...); a non-finite value (the loss of a skipped
update) is written as null, never dropped. Only process 0 writes. On resume all three outputs
are cut back to the restored step, so none repeats a step: metrics.jsonl and samples.txt are
rewritten without the later steps, and TensorBoard is told to purge them (a purge_step event).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Iterable

import numpy as np


class MetricWriter:
    """Per-step scalars to `<workdir>/metrics.jsonl` (one JSON line per step, non-finite values
    dropped) and to TensorBoard when tensorboardX is installed; sample texts to samples.txt.

    enabled=False (processes other than 0): every call does nothing. resume_step: lines of steps
    after it are dropped from an existing metrics.jsonl, so a resumed run does not repeat them.
    """
    def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.dir = pathlib.Path(workdir)
        self.path = self.dir / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [l for l in self.path.read_text().splitlines()
                    if l.strip() and resume_step is not None and json.loads(l).get("step", 0) <= resume_step]
            self.path.write_text("".join(l + "\n" for l in keep))
        samples = self.dir / "samples.txt"
        if samples.exists():
            samples.write_text(_cut_samples(samples.read_text(), resume_step))
        tb_dir = self.dir / "tensorboard"
        # Events of steps after the restored one, written before the restart, are hidden by TensorBoard.
        purge = (resume_step or 0) + 1 if tb_dir.is_dir() and any(tb_dir.iterdir()) else None
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(tb_dir), purge_step=purge)
        except ImportError:  # metrics.jsonl still has everything
            self._tb = None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = {k: None if v is None or not math.isfinite(float(v)) else float(v) for k, v in scalars.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": int(step), **values}, sort_keys=True) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if v is not None:
                    self._tb.add_scalar(k, v, int(step))

    def write_before_start(self, phase: str, step: int, scalars: dict[str, float]) -> None:
        """Scalars of a phase that runs before GRPO step 1 (the warm-start): a metrics.jsonl row
        {"step": 0, "<phase>/step": step, "<phase>/<name>": value} (step 0: kept on resume, apart
        from the GRPO steps' rows), and TensorBoard curves <phase>/<name> over the phase's steps."""
        if not self.enabled:
            return
        clean = {f"{phase}/{k}": float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": 0, f"{phase}/step": int(step), **clean}, sort_keys=True) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, int(step))

    def text(self, step: int, tag: str, text: str) -> None:
        if not self.enabled:
            return
        with open(self.dir / "samples.txt", "a") as f:
            f.write(f"=== step {step} {tag} ===\n{text}\n")
        if self._tb is not None:
            self._tb.add_text(tag, text.replace("\n", "  \n"), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _cut_samples(text: str, resume_step: int | None) -> str:
    """samples.txt without the blocks of steps after resume_step ("=== step N tag ===" headers)."""
    out, keep = [], True
    for line in text.splitlines(keepends=True):
        m = re.match(r"=== step (\d+) ", line)
        if m:
            keep = resume_step is not None and int(m.group(1)) <= resume_step
        if keep:
            out.append(line)
    return "".join(out)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl (one dict per non-empty line)."""
    return [json.loads(l) for l in pathlib.Path(path).read_text().splitlines() if l.strip()]


def plot_curves(rows: list[dict], keys: Iterable[str], out: str | os.PathLike, *, title: str = "",
                smooth: int = 5) -> pathlib.Path:
    """PNG of metrics against step: raw points faint, a running mean over `smooth` steps bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
        steps, vals = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], float)
        line, = ax.plot(steps, vals, alpha=0.25)
        if len(vals) >= smooth > 1:
            kernel = np.ones(smooth) / smooth
            ax.plot(steps[smooth - 1:], np.convolve(vals, kernel, "valid"), color=line.get_color(), label=k)
        else:
            line.set_label(k)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = pathlib.Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
