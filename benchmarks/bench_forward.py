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
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = omni_jax.load_thinker(d, progress=False)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config["audio_token_index"], size=(args.batch, args.length))
    mask = np.ones_like(ids)
    inputs = prepare_inputs(ours.cfg, input_ids=ids, attention_mask=mask)
    graphdef, state = nnx.split(ours)
    dev_inputs = jax.device_put(inputs)

    def run_ours():
        return _jitted_forward(graphdef, state, dev_inputs).block_until_ready()

    t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

    def run_hf():
        with torch.no_grad():
            return hf(input_ids=t_ids, attention_mask=t_mask).logits

    ours_s = timeit(run_ours, repeat=args.repeat)
    hf_s = timeit(run_hf, repeat=args.repeat)
    diff = float(np.abs(np.asarray(run_ours()) - run_hf().numpy()).max())
    tokens = args.batch * args.length
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}")
    print(f"text decoder parameters: {n_text / 1e6:.1f}M; batch {args.batch} x {args.length} tokens; float32")
    print(f"| system | forward s | tokens/s | speedup |")
    print(f"|---|---|---|---|")
    print(f"| transformers {__import__('transformers').__version__} eager (sdpa) | {hf_s:.3f} | {tokens / hf_s:,.0f} | 1.00x |")
    print(f"| omni_jax jitted | {ours_s:.3f} | {tokens / ours_s:,.0f} | {hf_s / ours_s:.2f}x |")
    print(f"max |logit difference| {diff:.2e}")


if __name__ == "__main__":
    main()
