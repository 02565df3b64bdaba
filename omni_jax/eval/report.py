"""Evaluation report: summaries with bootstrap intervals, HumanOmniV2-shaped JSON, markdown, charts.

Result rows are `scoring.score_row` outputs (plus an optional `judge` rating 0–10). Rows with a
`probe` field are probe rows: they count only towards probe compliance, never towards accuracy or
the people-focus means (the appended instruction changes the question, and the people-focus
instruction would inflate the people-focus numbers).

- `summarize(results, skipped)`: one checkpoint on one benchmark: accuracy (overall, with
  HumanOmniV2's literal rules, per problem_type, per IntentBench category `Type`), people focus
  (keyword score, counts per list, think words, share with a <think>, judge), probe compliance per
  instruction and overall; each {"mean", "lo", "hi", "n"} with a 95 % bootstrap interval.
- `humanomni_json(results)`: `{"results": [...], "final_acc": [{"mean_acc": ...}]}` as
  HumanOmniV2's `eval_results/<dataset>_<name>.json` (probe rows under "probe_results").
- `markdown(results, skipped)`: per benchmark one table, checkpoints side by side, and for every
  checkpoint after the first its difference to the first with a *paired* bootstrap interval over
  the questions both answered (matched by `id`).
- `write_report(out_dir, results, skipped)`: report.md, summary.json and the PNG charts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from omni_jax.eval import charts, probe, stats

Key = tuple[str, str]  # (bench, checkpoint name)
LIST_SKIPPED = 20  # skipped rows listed per checkpoint in report.md (all are in summary.json)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One line of the report: where it goes in `summarize`'s dict, how a row gives its value."""

    path: tuple[str, ...]
    label: str
    value: Callable[[dict], float | None]  # None: the row does not count for this metric
    percent: bool = False
    digits: int = 3
    on_probe_rows: bool = False


def is_probe(row: dict) -> bool:
    return bool(row.get("probe"))


def _field(name: str, *, when: Callable[[dict], bool] = lambda r: True):
    def value(row):
        found = row.get(name)
        return None if found is None or not when(row) else float(found)
    return value


def _people(name: str):
    return lambda row: None if "people_focus" not in row else float(row["people_focus"].get(name, 0))


def metrics(*result_lists: list[dict]) -> list[Metric]:
    """The report's lines for these checkpoints' rows (types, categories, lists, probes found)."""
    rows = [r for results in result_lists for r in results]
    questions = [r for r in rows if not is_probe(r)]
    types = list(dict.fromkeys(str(r["problem_type"]) for r in questions if "problem_type" in r))
    categories = list(dict.fromkeys(str(r["Type"]) for r in questions if r.get("Type") is not None))
    lists = list(dict.fromkeys(k for r in questions for k in r.get("people_focus", {}) if k != "score"))
    probes = [i.name for i in probe.INSTRUCTIONS if any(r.get("probe") == i.name for r in rows)]
    probes += list(dict.fromkeys(r["probe"] for r in rows if is_probe(r) and r["probe"] not in probes))

    out = [Metric(("accuracy",), "accuracy", _field("reward"), percent=True)]
    if any("reward_humanomniv2" in r for r in questions):
        out.append(Metric(("accuracy_humanomniv2",), "accuracy, HumanOmniV2's rules",
                          _field("reward_humanomniv2"), percent=True))
    for t in types:
        out.append(Metric(("by_problem_type", t), f"type: {t}",
                          _field("reward", when=lambda r, t=t: str(r.get("problem_type")) == t), percent=True))
    for c in categories:
        out.append(Metric(("by_category", c), f"category: {c}",
                          _field("reward", when=lambda r, c=c: str(r.get("Type")) == c), percent=True))
    out.append(Metric(("people_focus", "score"), "people focus score (0–1)", _people("score")))
    for name in lists:
        out.append(Metric(("people_focus", name), f"{name} keywords", _people(name), digits=2))
    out.append(Metric(("people_focus", "think_words"), "`<think>` words", _field("think_words"), digits=1))
    out.append(Metric(("people_focus", "has_think"), "has a `<think>`", _field("has_think"), percent=True))
    if any(r.get("judge") is not None for r in questions):
        out.append(Metric(("people_focus", "judge"), "judge rating (0–10)", _field("judge"), digits=2))
    for name in probes:
        out.append(Metric(("probe", "by_instruction", name), f"probe: {name}",
                          _field("probe_ok", when=lambda r, n=name: r.get("probe") == n),
                          percent=True, on_probe_rows=True))
    if probes:
        out.append(Metric(("probe", "overall"), "probe: all six", _field("probe_ok"), percent=True,
                          on_probe_rows=True))
    return out


def _values(results: list[dict], metric: Metric) -> dict:
    """{row id: value} of the rows that count for `metric`."""
    out = {}
    for index, row in enumerate(results):
        if is_probe(row) != metric.on_probe_rows:
            continue
        value = metric.value(row)
        if value is not None:
            out[row.get("id", index)] = value
    return out


def _interval(values, n_boot: int, seed: int) -> dict | None:
    values = list(values)
    if not values:
        return None
    mean, lo, hi = stats.bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(values)}


def summarize(results: list[dict], skipped: list[dict] | None = None, *, n_boot: int = 1000,
              seed: int = 0) -> dict:
    """Means with 95 % bootstrap intervals of one checkpoint's rows on one benchmark.

    Every interval is {"mean", "lo", "hi", "n"} (None when no row counts):
        n, n_probe                      question rows, probe rows
        accuracy                        reward (0–1) over question rows
        accuracy_humanomniv2            reward_humanomniv2 (when rows carry it)
        by_problem_type[t], by_category[Type]
        people_focus: score, <list> (keyword counts: people, action, environment), think_words,
                      has_think (share), judge (0–10, when rows carry a rating)
        probe: by_instruction[name], overall (share of probe rows whose probe_ok is True)
        skipped: {"count", "rows"}
    """
    summary: dict = {"n": sum(not is_probe(r) for r in results),
                     "n_probe": sum(is_probe(r) for r in results)}
    for metric in metrics(results):
        interval = _interval(_values(results, metric).values(), n_boot, seed)  # None: no rows
        node = summary
        for part in metric.path[:-1]:
            node = node.setdefault(part, {})
        node[metric.path[-1]] = interval
    skipped = list(skipped or [])
    summary["skipped"] = {"count": len(skipped), "rows": skipped}
    return summary


def humanomni_json(results: list[dict]) -> dict:
    """HumanOmniV2's output shape; mean_acc is the mean reward of the question rows (None if none)."""
    questions = [r for r in results if not is_probe(r)]
    mean = sum(r["reward"] for r in questions) / len(questions) if questions else None
    out = {"results": questions, "final_acc": [{"mean_acc": mean}]}
    probes = [r for r in results if is_probe(r)]
    if probes:
        out["probe_results"] = probes
    return out


def _group(results: dict) -> dict[str, dict[str, list[dict]]]:
    by_bench: dict[str, dict[str, list[dict]]] = {}
    for (bench, checkpoint), rows in results.items():
        by_bench.setdefault(bench, {})[checkpoint] = rows
    return by_bench


def _cell(interval: dict | None, metric: Metric) -> str:
    if interval is None:
        return "—"
    scale, digits = (100.0, 1) if metric.percent else (1.0, metric.digits)
    mean, lo, hi = (interval[k] * scale for k in ("mean", "lo", "hi"))
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _diff_cell(base: dict, other: dict, metric: Metric, n_boot: int, seed: int) -> str:
    common = [k for k in base if k in other]
    if not common:
        return "—"
    mean, lo, hi = stats.paired_diff_ci([base[k] for k in common], [other[k] for k in common],
                                        n_boot=n_boot, seed=seed)
    scale, digits = (100.0, 1) if metric.percent else (1.0, metric.digits)
    note = "" if len(common) == len(base) == len(other) else f" (n={len(common)})"
    return f"{mean * scale:+.{digits}f} [{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}]{note}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _skipped_lines(checkpoint: str, rows: list[dict]) -> list[str]:
    lines = [f"- {_escape(checkpoint)}: {len(rows)} skipped"]
    for row in rows[:LIST_SKIPPED]:
        what = row.get("id", row.get("index", "?"))
        reason = row.get("reason", row.get("error", json.dumps(row, ensure_ascii=False, default=str)[:200]))
        lines.append(f"  - `{_escape(what)}`: {_escape(reason)}")
    if len(rows) > LIST_SKIPPED:
        lines.append(f"  - … and {len(rows) - LIST_SKIPPED} more (all listed in summary.json)")
    return lines


def markdown(results: dict[Key, list[dict]], skipped: dict[Key, list[dict]] | None = None, *,
             charts_by_bench: dict[str, list[str]] | None = None, n_boot: int = 1000, seed: int = 0) -> str:
    """The report text: per benchmark a table of every metric with checkpoints side by side."""
    skipped = skipped or {}
    lines = ["# Evaluation report", "",
             "Means with 95 % bootstrap intervals [lo, hi]; accuracy and rates in %. Differences are "
             "against the first checkpoint, paired over the questions both answered (n given when "
             "fewer than all). Probe rows count only in the probe lines.", ""]
    for bench, by_checkpoint in _group(results).items():
        names = list(by_checkpoint)
        lines += [f"## {_escape(bench)}", ""]
        header = ["metric"] + [_escape(n) for n in names] + [f"{_escape(n)} − {_escape(names[0])}" for n in names[1:]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        counts = [str(sum(not is_probe(r) for r in by_checkpoint[n])) for n in names]
        skips = [str(len(skipped.get((bench, n), []))) for n in names]
        lines.append("| questions scored | " + " | ".join(counts + [""] * (len(names) - 1)) + " |")
        lines.append("| skipped | " + " | ".join(skips + [""] * (len(names) - 1)) + " |")
        for metric in metrics(*by_checkpoint.values()):
            values = [_values(by_checkpoint[n], metric) for n in names]
            cells = [_cell(_interval(v.values(), n_boot, seed), metric) for v in values]
            cells += [_diff_cell(values[0], v, metric, n_boot, seed) for v in values[1:]]
            label = metric.label if not metric.path[0].startswith("by_") else f"{metric.label} (n={len(values[0])})"
            lines.append(f"| {_escape(label)} | " + " | ".join(cells) + " |")
        lines.append("")
        for chart in (charts_by_bench or {}).get(bench, []):
            lines += [f"![{Path(chart).stem}]({chart})", ""]
        if any(skipped.get((bench, n)) for n in names):
            lines += ["Skipped questions:", ""]
            for n in names:
                if skipped.get((bench, n)):
                    lines += _skipped_lines(n, skipped[(bench, n)])
            lines.append("")
    return "\n".join(lines)


def _finite(obj):
    """JSON-safe copy: NaN/inf floats become None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "bench"


def write_report(out_dir, results: dict[Key, list[dict]], skipped: dict[Key, list[dict]] | None = None, *,
                 n_boot: int = 1000, seed: int = 0) -> Path:
    """Write out_dir/report.md, out_dir/summary.json and the PNG charts; return report.md's path.

    Charts per benchmark: `<bench>_accuracy.png` (overall and per category, or per problem_type
    when rows have no `Type`), `<bench>_people_focus.png`, and `<bench>_probe.png` when probe rows
    exist; checkpoints side by side with 95 % interval error bars.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = skipped or {}
    summaries: dict[str, dict[str, dict]] = {}
    charts_by_bench: dict[str, list[str]] = {}
    for bench, by_checkpoint in _group(results).items():
        summaries[bench] = {name: summarize(rows, skipped.get((bench, name)), n_boot=n_boot, seed=seed)
                            for name, rows in by_checkpoint.items()}
        stem = _file_name(bench)
        charts_by_bench[bench] = [
            path.name for path in charts.write_bench_charts(out_dir, stem, bench, summaries[bench])]
    text = markdown(results, skipped, charts_by_bench=charts_by_bench, n_boot=n_boot, seed=seed)
    path = out_dir / "report.md"
    path.write_text(text + "\n", encoding="utf-8")
    (out_dir / "summary.json").write_text(
        json.dumps(_finite(summaries), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path
