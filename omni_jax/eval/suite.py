"""Several checkpoints × several benchmarks → per-sample files, HumanOmniV2-shaped JSON, one report.

    report = run_suite(["workdir/default/checkpoints@0", "workdir/default/checkpoints"], ["intentbench"],
                       data_dir="/data/eval", out_dir="/tmp/eval_out", limit=100)

For every (benchmark, checkpoint) it writes `OUT/<bench>_<checkpoint>.jsonl` (one line per finished
question, appended as it finishes; a rerun continues where it stopped) and at the end
`OUT/<bench>_<checkpoint>.json` (HumanOmniV2's `{"results", "final_acc"}` plus `skipped`), then
`OUT/report.md`, `OUT/summary.json` and PNG charts (`omni_jax.eval.report`). The instruction-following
probe (`probe_per_instruction` questions per instruction, 0 = off) runs the same way, its rows
marked with `probe`.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import pathlib
import tempfile

import jax
from etils import epath

from omni_jax import parallel
from omni_jax.eval import checkpoints, datasets, probe, report, runner
from omni_jax.eval.datasets import Item

log = logging.getLogger("omni_jax.eval")


@dataclasses.dataclass
class SuiteOptions:
    limit: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 2048
    probe_per_instruction: int = 10
    probe_seed: int = 0
    tokenizer: str | None = None
    dtype: str = "float32"
    data_overrides: dict = dataclasses.field(default_factory=dict)  # e.g. {"max_frames": 768}
    progress: bool = True


def with_probe(items: list[Item], per_instruction: int, seed: int) -> list[Item]:
    """`items` followed by the probe's copies of a seeded sample of them (instruction appended)."""
    if per_instruction <= 0 or not items:
        return list(items)
    by_id = {it.row["id"]: it for it in items}
    probes = probe.probe_rows([it.row for it in items], per_instruction, seed)
    return list(items) + [Item(row, by_id[row["probe_of"]].record, row["instruction"]) for row in probes]


def output_stem(bench: str, checkpoint_name: str) -> str:
    return f"{bench}_{checkpoint_name}"


def write_json(path: str, payload: dict) -> None:
    text = json.dumps(payload, indent=2, ensure_ascii=False, default=runner._json_default) + "\n"
    if "://" in path:
        epath.Path(path).write_text(text)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def run_suite(ckpt_specs: list[str], benches: list[str], *, data_dir: str, out_dir: str,
              options: SuiteOptions | None = None, layout=None, judge=None, timestamps=None):
    """Evaluate every checkpoint on every benchmark (see the module docstring); returns report.md's path
    (None on processes other than 0).

    layout: the `parallel.Layout` (mesh + rules) every checkpoint is loaded onto and evaluated on;
    a bare Mesh is `Layout(mesh)` (the default rules); None: one device.

    timestamps: None, or a function `data_cfg -> post-processor` (e.g.
    `lambda cfg: omni_jax.timestamps.flags.from_args(args, cfg)`), called with each checkpoint's data
    config so the frames matched are the ones that checkpoint's Thinker saw; every answer is then
    post-processed before it is scored (`runner.evaluate`)."""
    options, layout = options or SuiteOptions(), parallel.as_layout(layout)
    is_main = jax.process_index() == 0
    if not ckpt_specs:
        raise ValueError("give at least one checkpoint")
    out_dir = str(out_dir).rstrip("/")
    if "://" not in out_dir:
        os.makedirs(out_dir, exist_ok=True)
    # Checkpoints and datasets first: a missing step, an unknown problem_type or a missing benchmark
    # stops the run before any model loads.
    for spec in ckpt_specs:
        checkpoints.check_exists(spec)
    loaded_benches = {}
    for bench in benches:
        items, skipped = datasets.load_bench(bench, data_dir, limit=options.limit)
        if not items:
            raise ValueError(f"benchmark {bench}: no usable question (skipped: "
                             f"{[s['reason'] for s in skipped][:10]})")
        loaded_benches[bench] = (with_probe(items, options.probe_per_instruction, options.probe_seed), skipped)
    results, skipped_by_key, names = {}, {}, []
    for spec in ckpt_specs:
        loaded = checkpoints.open_checkpoint(spec, tokenizer=options.tokenizer, dtype=options.dtype,
                                             layout=layout, progress=options.progress and is_main)
        if loaded.name in names:
            raise ValueError(f"two checkpoints are both named {loaded.name!r}: name them, --ckpt NAME=PATH")
        names.append(loaded.name)
        for key, value in options.data_overrides.items():
            loaded.data_cfg[key] = value
        post = timestamps(loaded.data_cfg) if timestamps is not None else None
        for bench, (items, load_skipped) in loaded_benches.items():
            stem = output_stem(bench, loaded.name)
            out = runner.evaluate(loaded.model, loaded.tokenizer, loaded.data_cfg, items,
                                  results_path=f"{out_dir}/{stem}.jsonl", batch_size=options.batch_size,
                                  max_new_tokens=options.max_new_tokens, layout=layout,
                                  progress=options.progress, desc=f"{bench} · {loaded.name}", judge=judge,
                                  timestamps=post)
            skipped = list(load_skipped) + out.skipped
            results[(bench, loaded.name)] = out.results
            skipped_by_key[(bench, loaded.name)] = skipped
            if is_main:
                payload = report.humanomni_json(out.results)
                payload["skipped"] = skipped
                write_json(f"{out_dir}/{stem}.json", payload)
                acc = payload["final_acc"][0]["mean_acc"]
                log.info("%s: %d questions (%d new, %.2f questions/s), %d skipped, mean_acc %s", stem,
                         len(out.results), out.new, out.questions_per_s, len(skipped),
                         "n/a" if acc is None else f"{acc:.4f}")
        del loaded
        gc.collect()
    if not is_main:
        return None
    if "://" not in out_dir:
        return report.write_report(out_dir, results, skipped_by_key)
    with tempfile.TemporaryDirectory() as tmp:  # the report writer writes local files: copy them up
        path = report.write_report(tmp, results, skipped_by_key)
        for f in pathlib.Path(tmp).iterdir():
            (epath.Path(out_dir) / f.name).write_bytes(f.read_bytes())
        return epath.Path(out_dir) / path.name
