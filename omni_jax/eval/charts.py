"""PNG charts of a benchmark's summaries (`report.summarize` per checkpoint), checkpoints side by side.

Grouped bars with 95 % bootstrap-interval error bars. Drawn with matplotlib's object API and the
Agg canvas (no pyplot, no display, no global backend change).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _grouped_bars(ax, groups: list[str], series: dict[str, list[dict | None]], *, scale: float, ylabel: str,
                  legend: bool = True):
    """Bars for every (group, series) pair; series values are summary intervals or None."""
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, intervals) in enumerate(series.items()):
        mean = np.array([np.nan if v is None else v["mean"] * scale for v in intervals])
        lo = np.array([np.nan if v is None else v["lo"] * scale for v in intervals])
        hi = np.array([np.nan if v is None else v["hi"] * scale for v in intervals])
        errors = np.nan_to_num(np.stack([mean - lo, hi - mean]))
        ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(mean), width, yerr=errors,
               capsize=3, label=name)
    ax.set_xticks(x, groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if legend:
        ax.legend(fontsize="small")


def _figure(width: float, height: float = 4.0):
    # matplotlib is heavy: imported only when a chart is drawn.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def write_bench_charts(out_dir: Path, stem: str, bench: str, summaries: dict[str, dict]) -> list[Path]:
    """Write `<stem>_accuracy.png`, `<stem>_people_focus.png` and, with probe rows,
    `<stem>_probe.png` under out_dir; return their paths."""
    names = list(summaries)
    written = []

    by = "by_category" if any(s.get("by_category") for s in summaries.values()) else "by_problem_type"
    groups = list(dict.fromkeys(g for s in summaries.values() for g in s.get(by, {})))
    figure = _figure(max(6.0, 1.0 + 0.9 * (len(groups) + 1) * max(1, len(names)) / 2))
    series = {n: [summaries[n].get("accuracy")] + [summaries[n].get(by, {}).get(g) for g in groups]
              for n in names}
    _grouped_bars(figure.add_subplot(), ["overall"] + groups, series, scale=100.0, ylabel="accuracy (%)")
    figure.suptitle(f"{bench}: accuracy by {'category' if by == 'by_category' else 'problem type'}")
    written.append(out_dir / f"{stem}_accuracy.png")
    figure.savefig(written[-1], dpi=100)

    people = {n: summaries[n].get("people_focus", {}) for n in names}
    lists = list(dict.fromkeys(k for p in people.values() for k in p
                               if k not in ("score", "think_words", "has_think", "judge")))
    has_judge = any("judge" in p for p in people.values())
    panels = 3 + has_judge
    figure = _figure(3.6 * panels)
    axes = figure.subplots(1, panels)
    _grouped_bars(axes[0], ["keyword score"], {n: [people[n].get("score")] for n in names}, scale=1.0,
                  ylabel="people focus (0–1)")
    _grouped_bars(axes[1], lists, {n: [people[n].get(k) for k in lists] for n in names}, scale=1.0,
                  ylabel="keywords per <think>", legend=False)
    _grouped_bars(axes[2], ["think"], {n: [people[n].get("think_words")] for n in names}, scale=1.0,
                  ylabel="words per <think>", legend=False)
    if has_judge:
        _grouped_bars(axes[3], ["judge"], {n: [people[n].get("judge")] for n in names}, scale=1.0,
                      ylabel="judge rating (0–10)", legend=False)
    figure.suptitle(f"{bench}: people focus of the <think>")
    written.append(out_dir / f"{stem}_people_focus.png")
    figure.savefig(written[-1], dpi=100)

    probes = {n: summaries[n].get("probe", {}) for n in names}
    instructions = list(dict.fromkeys(k for p in probes.values() for k in p.get("by_instruction", {})))
    if instructions:
        figure = _figure(max(6.0, 1.2 * (len(instructions) + 1)))
        series = {n: [probes[n].get("by_instruction", {}).get(k) for k in instructions] + [probes[n].get("overall")]
                  for n in names}
        _grouped_bars(figure.add_subplot(), instructions + ["all"], series, scale=100.0,
                      ylabel="instructions followed (%)")
        figure.suptitle(f"{bench}: instruction-following probe")
        written.append(out_dir / f"{stem}_probe.png")
        figure.savefig(written[-1], dpi=100)
    return written
