"""The embedded default: a tiny Thinker learning GRPO on synthetic video questions, on CPU.

    python -m omni_jax.train                      # uses this file
    python -m omni_jax.train --config configs/default.py --config.total_steps=50
    python -m omni_jax.train --config configs/default.py:lora   # GRPO trains LoRA adapters only

The tiny model starts from random weights, so a short supervised warm-start on synthetic
demonstrations (`warmstart.steps`) teaches it the <context>/<think>/<answer> form first; GRPO then
raises the reward (format + accuracy + people_focus) from there.

Variant `lora`: the same warm-start (the model's own weights: it stands for the pretrained base a
real run starts from), then GRPO trains LoRA adapters only (rank 8, α 16 on every projection of
the text decoder: 58,368 trainable parameters against the full run's 771,712) at a learning
rate 5× the full run's (1e-3: 5e-4 barely moved the reward in 100 steps, 2e-3 lost the answer
format late in the run; benchmarks/RESULTS.md).
"""

from omni_jax import config_utils
from omni_jax.data.config import data_defaults


def get_config(arg=None):
    variant = config_utils.parse_arg(arg, num_generations=8, steps=100, lora=False)
    c = config_utils.base()
    c.seed = 0
    c.total_steps = variant.steps
    c.checkpoint_every_steps = 40
    # Steps 0 (the warm-start), 40, 80 and 100 all kept: `python -m omni_jax.eval` compares the
    # warm-start with the final checkpoint.
    c.keep_checkpoints = 4
    c.sample_every_steps = 20
    c.batch_prompts = 4
    c.tokenizer = "tiny"
    c.model.init = "random"
    c.model.architecture = "tiny"
    c.model.reference_dtype = "float32"
    c.model.layer_loop = "unrolled"  # CPU: faster than a scan over 3 layers (see omni_jax.model.config)
    c.rollout.num_generations = variant.num_generations
    c.rollout.max_new_tokens = 112
    c.rollout.temperature = 0.7
    c.rollout.top_k = 0
    c.grpo.scale_rewards = "group"
    c.grpo.beta = 0.0
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 5
    c.optim.schedule = "constant"
    c.optim.grad_accum = 1
    c.warmstart.steps = 160
    c.warmstart.learning_rate = 3e-3
    c.warmstart.batch_prompts = 8
    c.mesh.fsdp = -1
    # The batch split over 2 JAX CPU devices (one per core of the 2-core machines this targets):
    # a GRPO step of this config takes 0.71 s on 2 devices against 0.98 s on 1 (bench_grpo_step).
    c.mesh.cpu_devices = 2
    if variant.lora:
        c.lora.rank = 8
        c.lora.alpha = 16.0
        c.optim.learning_rate = 1e-3
        c.warmstart.lora = False
    c.data = data_defaults("tiny")
    # A one-line system prompt instead of HumanOmniV2's ~450-token one: the same three-block
    # answer form at a fifth of the prompt length, which is what a 2½-to-3-minute run on 2 CPU cores can afford.
    c.data.system_prompt = ("You are a helpful assistant. Describe the video and audio in <context> </context>, "
                            "reason in <think> </think>, then give the answer in <answer> </answer>.")
    c.lock()
    return c
