"""The fit report as a text table (per step, GiB per chip) or as one JSON object."""

from __future__ import annotations

import json

GIB = 2**30


def _gib(x: float) -> str:
    return f"{x / GIB:7.2f}"


def to_json(report) -> str:
    return json.dumps(report.to_json(), indent=1, sort_keys=False)


def to_text(report) -> str:
    """Human-readable report: shapes, then per step the HBM per chip by kind, XLA's numbers next to the arithmetic."""
    s = report.shapes
    lines = [
        f"TPU {report.topology}: {report.chips} chips, mesh {report.mesh}, {report.hbm_bytes_per_chip / GIB:.0f} GiB HBM, "
        f"{report.peak_flops_per_chip / 1e12:.0f} TFLOP/s bf16, {report.hbm_bandwidth_per_chip / 1e9:.0f} GB/s per chip",
        f"batch: {s['prompts']} prompts × {s['generations']} candidates = {s['rows']} rows, prompt {s['prompt_tokens']} "
        f"tokens padded to {s['prompt_length']} (video grid {tuple(s['video_grid'])}, {s['audio_frames']} mel frames, "
        f"{s['text_tokens']} text), completions {s['max_new_tokens']}, grad_accum {s['grad_accum']}, remat {s['remat']}",
        f"parameters: {report.parameters['trainable'] / 1e9:.2f} B trainable, {report.parameters['frozen'] / 1e9:.2f} B "
        "frozen",
        "",
        "GiB per chip   params  optim  activ  temps   total    HBM   fits | by hand: params  optim  activ  temps"
        " |   TFLOP  roofline",
    ]
    for st in report.steps:
        e = st.estimate
        fits = "yes" if st.fits else "NO"
        lines.append(
            f"{st.name:<12s} {_gib(st.params)}{_gib(st.optimizer)}{_gib(st.activations)}{_gib(st.temporaries)} "
            f"{_gib(st.bytes_per_chip)}{_gib(st.hbm_bytes_per_chip)} {fits:>5s} |        "
            f"{_gib(e['params'])}{_gib(e['optimizer'])}{_gib(e['activations'])}{_gib(e['temporaries'])} | "
            f"{st.flops / 1e12:8.1f} {st.roofline_seconds:7.2f} s ({st.bound})")
        if st.error:
            lines.append(f"{'':12s} compiler: {st.error}")
    lines += ["", "params = policy + frozen towers + reference; optim = AdamW moments; activ = inputs, KV cache, "
              "GRPO batch, outputs; temps = XLA temporaries at the step's peak. 'by hand' temps hold only the sure "
              "terms (prefill: the prompts' cache; train: gradients, AdamW update, remat checkpoints, one MLP). "
              "TFLOP: whole step, all chips; roofline: max(compute, HBM traffic) at peak rates."]
    verdict = "fits" if report.fits else "does NOT fit"
    lines.append(f"=> {verdict} on {report.topology}")
    return "\n".join(lines)
