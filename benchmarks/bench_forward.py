"""Forward pass of a ~100M-parameter text-only Thinker: omni_jax (jitted) vs transformers (eager), CPU.

    python benchmarks/bench_forward.py [--batch 4] [--length 512] [--dtype float32]

Both run in this process on the same weights and inputs; prints a table and the logit difference.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import build_hf, machine, text_100m_config, timeit  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import jax
    import torch
    from flax import nnx

    import omni_jax
    from omni_jax.model.inputs import prepare_inputs
    from omni_jax.model.thinker import _jitted_forward

    torch.set_num_threads(max(1, torch.get_num_threads()))
    config = text_100m_config()
    hf = build_hf(config)
    n_text = sum(p.numel() for n, p in hf.named_parameters() if not n.startswith(("visual", "audio_tower")))
    models = {}
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        for loop in ("scan", "unrolled"):
            models[loop] = omni_jax.load_thinker(d, progress=False, layer_loop=loop)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config["audio_token_index"], size=(args.batch, args.length))
    mask = np.ones_like(ids)
    inputs = jax.device_put(prepare_inputs(models["scan"].cfg, input_ids=ids, attention_mask=mask))

    def runner(model):
        graphdef, state = nnx.split(model)
        return lambda: _jitted_forward(graphdef, state, inputs).block_until_ready()

    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

    def run_hf():
        with torch.no_grad():
            return hf(input_ids=t_ids, attention_mask=t_mask).logits

    ours_s = {loop: timeit(runner(m), repeat=args.repeat) for loop, m in models.items()}
    hf_s = timeit(run_hf, repeat=args.repeat)
    ref = run_hf().numpy()
    diff = max(float(np.abs(np.asarray(runner(m)()) - ref).max()) for m in models.values())
    tokens = args.batch * args.length
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    print(f"text decoder parameters: {n_text / 1e6:.1f}M; batch {args.batch} x {args.length} tokens; float32")
    print("| system | forward s | tokens/s | speedup |")
    print("|---|---|---|---|")
    print(f"| transformers {__import__('transformers').__version__} eager (sdpa) | {hf_s:.3f} | {tokens / hf_s:,.0f} "
          "| 1.00x |")
    for loop, sec in ours_s.items():
        print(f"| omni_jax jitted, layer_loop={loop} | {sec:.3f} | {tokens / sec:,.0f} | {hf_s / sec:.2f}x |")
    print(f"max |logit difference| {diff:.2e}")

if __name__ == "__main__":
    main()
