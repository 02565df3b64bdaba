"""Supervised fine-tuning with LoRA: the plan's stage before GRPO (HumanOmniV2 + LoRA r 64, α 128).

    python -m omni_jax.sft --config configs/sft_lora.py:model=7b,manifest=/data/sft/train.json \
        --workdir gs://bucket/runs/sft --config.model.init=/ckpt/HumanOmniV2 --config.tokenizer=/ckpt/HumanOmniV2
    python -m omni_jax.sft --config configs/sft_lora.py:tiny      # a tiny model on synthetic rows, on CPU

Rows are HumanOmniV2's json/jsonl format (problem, options, path / video, ...); each row's
`solution` (or `response`) is the target completion, the loss is on its tokens only.
Variants: model=3b|7b, manifest=<json/jsonl>, media_root=<folder its paths are relative to>,
rank=64, alpha=128, full (rank 0: full fine-tuning), topology=<TPU slice>, tiny.
Then GRPO from the result: export merged (`jax2hf`) or start GRPO from the checkpoint directly.
"""

from omni_jax import config_utils
from omni_jax.data.config import data_defaults

TOPOLOGIES = {"v5p-8": 4, "v5p-16": 8, "v5e-16": 16, "v5e-32": 32, "v6e-8": 8, "v6e-16": 16, "v4-8": 4, "v4-16": 8}


def get_config(arg=None):
    v = config_utils.parse_arg(arg, model="7b", manifest="", media_root="", rank=64, alpha=128.0, full=False,
                               topology="", tiny=False)
    c = config_utils.base()
    c.seed = 42
    c.total_steps = 1000
    c.batch_prompts = 32  # rows per optimizer step: 8 per micro-batch (grad_accum 4) divide over 8 chips
    c.checkpoint_every_steps = 100
    c.keep_checkpoints = 3
    c.tokenizer = ""  # the HF checkpoint directory holding tokenizer.json
    c.model.init = ""  # HF directory or omni_jax checkpoint of HumanOmniV2
    c.model.architecture = v.model
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = "full"
    c.model.attention_query_chunk = 1024
    c.model.attention_key_chunk = 1024
    c.lora.rank = 0 if v.full else int(v.rank)
    c.lora.alpha = float(v.alpha)
    c.lora.dropout = 0.05
    c.optim.learning_rate = 1e-4 if not v.full else 1e-5  # RECIPE: GRPO's 5e-7 is ~100x below SFT's
    c.optim.warmup_steps = 30
    c.optim.schedule = "cosine"
    c.optim.grad_accum = 4
    c.optim.weight_decay = 0.0
    c.sft = config_utils.sft_defaults()
    c.sft.max_completion_tokens = 1024
    c.data = data_defaults()
    c.data.max_frames = 64
    c.data.max_pixels = 602112
    c.data.prompt_buckets = (256, 512, 1024, 2048, 4096, 8192, 16384, 24576, 28672, 31744)
    c.data.max_prompt_tokens = 31744
    c.data.manifests.sft = v.manifest
    c.data.manifest_roots.sft = v.media_root
    c.data.mixture = {"sft": 1.0}
    c.mesh.data, c.mesh.fsdp, c.mesh.tp = 1, -1, 1
    if v.topology:
        if v.topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {v.topology!r}; known: {sorted(TOPOLOGIES)}")
        c.mesh.fsdp = TOPOLOGIES[v.topology]
    if v.tiny:
        c.seed = 0
        c.total_steps = 40
        c.batch_prompts = 4
        c.checkpoint_every_steps = 20
        c.tokenizer = "tiny"
        c.model.init = "random"
        c.model.architecture = "tiny"
        c.model.dtype = "float32"
        c.model.remat = "none"
        c.model.layer_loop = "unrolled"
        c.lora.rank = 0 if v.full else 8
        c.lora.alpha = 16.0
        c.lora.dropout = 0.0
        c.optim.learning_rate = 3e-3
        c.optim.warmup_steps = 4
        c.optim.grad_accum = 2
        c.sft.max_completion_tokens = 160
        c.mesh.fsdp = -1
        c.mesh.cpu_devices = 2
        c.data = data_defaults("tiny")
        c.data.mixture = {"synthetic": 1.0}
    c.lock()
    return c
