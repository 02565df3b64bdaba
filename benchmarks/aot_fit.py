"""Which TPU slices hold the 7B stage-4 run? The deviceless fit check (`omni_jax.aot`) over slices.

    /work/venv-tpu/bin/python -m benchmarks.aot_fit                     # the RESULTS.md table
    /work/venv-tpu/bin/python -m benchmarks.aot_fit --cases v5p-8 v4-16:optim.grad_accum=8

Each case is `slice[:field=value,...]` (config overrides on configs/stage4_people_focus.py:model=7b).
Every case compiles the run's prefill, decode, train and reference steps for that slice with
libtpu on this machine (minutes per case, no TPU). Prints a markdown table of GiB per chip per
step against HBM, writes every report to benchmarks/results/aot_fit.json and a bar chart to
benchmarks/results/aot_fit.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib

from tqdm import tqdm

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "stage4_people_focus.py"
OUT = ROOT / "benchmarks" / "results"
GIB = 2**30

# The slices of issue 9, smallest first per family, with what a config needs to be valid there
# (a micro-batch's rows must divide over the chips: 64 rows / grad_accum).
DEFAULT_CASES = (
    "v5p-8", "v5p-8:optim.grad_accum=2",  # 2: every candidate of a question shares one prompt pass
    "v4-8", "v4-16", "v4-32:optim.grad_accum=4",
    "v6e-8", "v6e-16:optim.grad_accum=4",
    "v5e-16:optim.grad_accum=4", "v5e-32:optim.grad_accum=2", "v5e-64:optim.grad_accum=1",
)


def load_config(variant: str = "model=7b", overrides: dict | None = None):
    spec = importlib.util.spec_from_file_location("stage4_people_focus", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant)
    for key, value in (overrides or {}).items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = type(node[last])(value)
    return config


def parse_case(case: str) -> tuple[str, dict]:
    topology, _, rest = case.partition(":")
    overrides = dict(item.split("=", 1) for item in rest.split(",") if item)
    return topology, overrides


def markdown(results: list[dict]) -> str:
    head = ("| slice | chips | overrides | prefill | decode | train | reference | HBM | fits | step time (roofline) |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in results:
        steps = {s["name"]: s for s in r["steps"]}

        def cell(name):
            s = steps.get(name)
            if s is None:
                return "–"
            mark = "" if s["fits"] else " ✗"
            return f"{s['bytes_per_chip'] / GIB:.1f}{mark}"
        seconds = sum(s["roofline_seconds"] for s in r["steps"])
        rows.append(f"| {r['topology']} | {r['chips']} | {r['case_overrides'] or '–'} | {cell('prefill')} | "
                    f"{cell('decode')} | {cell('train')} | {cell('reference')} | {r['hbm_bytes_per_chip'] / GIB:.0f} | "
                    f"{'yes' if r['fits'] else 'no'} | {seconds:.0f} s |")
    return "\n".join([head, *rows])


def plot(results: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["prefill", "decode", "train", "reference"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(results)), 4))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        values = [next((s["bytes_per_chip"] / GIB for s in r["steps"] if s["name"] == name), 0) for r in results]
        ax.bar([i + j * width for i in range(len(results))], values, width, label=name)
    for i, r in enumerate(results):
        ax.hlines(r["hbm_bytes_per_chip"] / GIB, i - width / 2, i + 0.8 - width / 2, colors="k", linestyles="--")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(results))],
                  [r["topology"] + ("\n" + r["case_overrides"] if r["case_overrides"] else "") for r in results],
                  fontsize=7)
    ax.set_ylabel("GiB per chip (dashed: HBM)")
    ax.set_title("Qwen2.5-Omni-7B GRPO stage 4, worst-case batch: HBM per chip")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES))
    parser.add_argument("--variant", default="model=7b")
    parser.add_argument("--steps", default="prefill,decode,train,reference", help="comma-separated steps to compile")
    parser.add_argument("--out", type=pathlib.Path, default=OUT / "aot_fit.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only: never take a local accelerator

    from omni_jax.aot import check_fit

    results = []
    for case in tqdm(args.cases, desc="slices", unit="slice"):
        topology, overrides = parse_case(case)
        config = load_config(args.variant, overrides)
        report = check_fit(config, topology, steps=tuple(args.steps.split(",")),
                           progress=lambda msg: tqdm.write(f"  {topology}: {msg}"))
        result = report.to_json()
        result["case_overrides"] = ",".join(f"{k}={v}" for k, v in overrides.items())
        results.append(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))  # after every case: a long sweep keeps what it has
    plot(results, args.out.with_suffix(".png"))
    print(f"configs/stage4_people_focus.py:{args.variant}, worst-case batch; GiB per chip per step (✗: over HBM)")
    print(markdown(results))


if __name__ == "__main__":
    main()
