"""Peak memory of checkpoint conversion, HF → Orbax and Orbax → HF, streamed vs whole-model.

    python benchmarks/bench_convert.py [--layers 4] [--shard_mb 500] [--workdir /tmp/bench_convert]

Builds a random bfloat16 HF Thinker checkpoint (~2 GB with the defaults: Qwen2.5-Omni-3B text
widths and vocabulary, `--layers` decoder layers, two full-width vision and audio layers), sharded
at `--shard_mb` with model.safetensors.index.json, written tensor by tensor so the builder stays
small. Then each conversion runs in its own subprocess while this process samples its resident
memory; the child reports its baseline (after imports) and peak (VmHWM). Compared side by side:

  hf2jax streamed    hf_to_orbax(...)                       (the library default on CPU)
  hf2jax whole       hf_to_orbax(..., layout=1-device mesh)  (every parameter placed, then saved)
  jax2hf streamed    orbax_to_hf(...)
  jax2hf whole       restore all params, then write the same shards

Prints a table (markdown, for benchmarks/RESULTS.md) and writes bench_convert_rss.png.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 2**20


def bench_config(layers: int) -> dict:
    """Qwen2.5-Omni-3B thinker widths with few layers (untied lm_head: two 151936 x 2048 matrices)."""
    return {
        "model_type": "qwen2_5_omni_thinker", "tie_word_embeddings": False,
        "audio_token_index": 151646, "image_token_index": 151655, "video_token_index": 151656,
        "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "audio_start_token_id": 151647, "audio_end_token_id": 151648,
        "text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
                        "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 2,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}},
        "vision_config": {"depth": 2, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "out_hidden_size": 2048, "fullatt_block_indexes": [1]},
        "audio_config": {"num_mel_bins": 128, "encoder_layers": 2, "encoder_attention_heads": 20,
                         "encoder_ffn_dim": 5120, "d_model": 1280, "output_dim": 2048},
    }


def build_checkpoint(directory: pathlib.Path, config: dict, shard_bytes: int) -> dict:
    """Random bf16 tensors under the HF names, written one block at a time."""
    import ml_dtypes

    from omni_jax.weights import hf_write, mapping
    from omni_jax.weights.safetensors_io import LazyTensor
    from omni_jax.model.config import from_hf_dict

    cfg = from_hf_dict(config)
    from flax import nnx

    from omni_jax.weights.hf_load import path_of
    from omni_jax.model.thinker import abstract_thinker
    import jax

    _, state = nnx.split(abstract_thinker(cfg))
    shapes = {path_of(kp): tuple(x.shape) for kp, x in jax.tree_util.tree_flatten_with_path(state)[0]}
    tensors = []
    for k, row in enumerate(mapping.thinker_rows(cfg.text.tie_word_embeddings)):
        flax_shape = shapes[row.flax_path()]
        shape = mapping.hf_shape(row, flax_shape[1:] if row.stacked else flax_shape, cfg)
        for layer, name in mapping.hf_names(row, mapping.num_layers_for(row, cfg)):
            def read(rows, shape=shape, seed=k * 1000 + (layer or 0)):
                n = len(range(*rows.indices(shape[0])))
                rng = np.random.default_rng([seed, rows.indices(shape[0])[0]])
                return (0.02 * rng.standard_normal((n, *shape[1:]), np.float32)).astype(ml_dtypes.bfloat16)
            tensors.append((name, LazyTensor(shape, ml_dtypes.bfloat16, read, block_rows=max(1, 4096 * 2048 // max(int(np.prod(shape[1:])), 1)))))
    tensors.sort(key=lambda t: hf_write.natural_key(t[0]))
    directory.mkdir(parents=True)
    index = hf_write.write_hf_weights(directory, tensors, shard_bytes, progress=True)
    (directory / "config.json").write_text(json.dumps(config))
    sizes = [f.stat().st_size for f in directory.glob("*.safetensors")]
    return {"model_bytes": index["metadata"]["total_size"], "largest_tensor": max(t.nbytes for _, t in tensors),
            "largest_shard": max(sizes), "shards": len(sizes)}


# ---- child processes --------------------------------------------------------------------------


def _status(key: str, pid="self") -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(mode: str, src: str, dst: str, shard_bytes: int) -> None:
    import jax

    from omni_jax import parallel
    from omni_jax.convert.hf_to_orbax import hf_to_orbax
    from omni_jax.convert.orbax_to_hf import orbax_to_hf

    jax.devices()
    baseline = _status("VmRSS")
    t0 = time.perf_counter()
    if mode == "hf2jax streamed":
        hf_to_orbax(src, dst, progress=False)
    elif mode == "hf2jax whole":
        hf_to_orbax(src, dst, layout=parallel.Layout(parallel.make_mesh({"fsdp": 1}, jax.devices()[:1])),
                    progress=False)
    elif mode == "jax2hf streamed":
        orbax_to_hf(src, dst, max_shard_bytes=shard_bytes, progress=False)
    elif mode == "jax2hf whole":
        _export_whole(src, dst, shard_bytes)
    seconds = time.perf_counter() - t0
    print(json.dumps({"baseline": baseline, "peak": _status("VmHWM"), "seconds": seconds}))


def _export_whole(src: str, dst: str, shard_bytes: int) -> None:
    """The straightforward exporter: all params restored into memory, then the same shards written."""
    import omni_jax
    from flax import nnx

    from omni_jax.weights import hf_write, mapping
    from omni_jax.weights.safetensors_io import LazyTensor

    model = omni_jax.load_thinker(src, dtype="bfloat16", progress=False)
    params = {k: np.asarray(v) for k, v in _flat(nnx.state(model, nnx.Param).to_pure_dict())}
    cfg = model.cfg
    tensors = []
    for row in mapping.thinker_rows(cfg.text.tie_word_embeddings):
        value = params[row.flax_path()]
        shape = mapping.hf_shape(row, value.shape[1:] if row.stacked else value.shape, cfg)
        for layer, name in mapping.hf_names(row, mapping.num_layers_for(row, cfg)):
            arr = np.ascontiguousarray(row.layout.to_hf(value if layer is None else value[layer], shape))
            tensors.append((name, LazyTensor(arr.shape, arr.dtype, lambda rows, arr=arr: arr[rows])))
    pathlib.Path(dst).mkdir()
    hf_write.write_hf_weights(pathlib.Path(dst), tensors, shard_bytes, progress=False)


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def run_child(mode: str, src, dst, shard_bytes: int) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", mode, str(src), str(dst), str(shard_bytes)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    samples, t0 = [], time.perf_counter()

    def poll():
        while proc.poll() is None:
            try:
                samples.append((time.perf_counter() - t0, _status("VmRSS", proc.pid)))
            except (FileNotFoundError, ProcessLookupError):
                break
            time.sleep(0.05)

    thread = threading.Thread(target=poll)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode:
        raise RuntimeError(f"{mode} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["samples"] = samples
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--shard_mb", type=int, default=500)
    ap.add_argument("--workdir", default="/tmp/bench_convert")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        mode, src, dst, shard_bytes = args.child
        return child(mode, src, dst, int(shard_bytes))

    from benchmarks.common import machine

    work = pathlib.Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    shard_bytes = args.shard_mb * 10**6
    info = build_checkpoint(work / "hf", bench_config(args.layers), shard_bytes)
    goal = info["largest_tensor"] + info["largest_shard"]
    runs = [("hf2jax streamed", work / "hf", work / "orbax"), ("hf2jax whole", work / "hf", work / "orbax_whole"),
            ("jax2hf streamed", work / "orbax", work / "export"), ("jax2hf whole", work / "orbax", work / "export_whole")]
    results = {}
    for mode, src, dst in runs:
        results[mode] = run_child(mode, src, dst, shard_bytes)
        print(f"{mode}: done in {results[mode]['seconds']:.1f} s", flush=True)

    print(f"\nMachine: {machine()}")
    print(f"Checkpoint: {info['model_bytes'] / MB:.0f} MiB bf16, {info['shards']} shards (largest "
          f"{info['largest_shard'] / MB:.0f} MiB), largest tensor {info['largest_tensor'] / MB:.0f} MiB; "
          f"goal: peak above baseline <= largest tensor + one shard = {goal / MB:.0f} MiB\n")
    print("| run | baseline RSS MiB | peak RSS MiB | peak above baseline MiB | goal met | time s | MB/s |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        above = r["peak"] - r["baseline"]
        print(f"| {mode} | {r['baseline'] / MB:.0f} | {r['peak'] / MB:.0f} | {above / MB:.0f} | "
              f"{'yes' if above <= goal else 'no'} | {r['seconds']:.1f} | {info['model_bytes'] / 1e6 / r['seconds']:.0f} |")
    print(f"\nround trip HF → Orbax → HF bit-exact: {_same_tensors(work / 'hf', work / 'export')} "
          f"(whole-model export too: {_same_tensors(work / 'hf', work / 'export_whole')})")
    _plot(results, info, goal, ROOT / "benchmarks" / "bench_convert_rss.png")
    shutil.rmtree(work, ignore_errors=True)


def _same_tensors(a, b) -> bool:
    from omni_jax.weights.safetensors_io import SafetensorsReader

    ra, rb = SafetensorsReader(a), SafetensorsReader(b)
    return sorted(ra.keys()) == sorted(rb.keys()) and all(
        ra.dtype(k) == rb.dtype(k) and np.array_equal(ra.read(k).view(np.uint8), rb.read(k).view(np.uint8))
        for k in ra.keys())


def _plot(results, info, goal, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, direction in zip(axes, ("hf2jax", "jax2hf")):
        for mode, r in results.items():
            if mode.startswith(direction) and r["samples"]:
                t, rss = zip(*r["samples"])
                ax.plot(t, np.array(rss) / MB, label=mode)
                baseline = r["baseline"]
        ax.axhline((baseline + goal) / MB, color="gray", ls=":", lw=1, label="baseline + goal")
        ax.axhline((baseline + info["model_bytes"]) / MB, color="red", ls="--", lw=1, label="baseline + model size")
        ax.set_title(f"{direction}: resident memory of the converting process")
        ax.set_xlabel("seconds")
        ax.legend()
    axes[0].set_ylabel("RSS (MiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
