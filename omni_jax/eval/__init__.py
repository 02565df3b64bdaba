"""Evaluation of checkpoints on HumanOmniV2's benchmarks (IntentBench, Daily-Omni, WorldSense).

Scoring and reporting (pure Python/NumPy, no model): `scoring` (HumanOmniV2's per-type rules,
people focus of the <think>), `probe` (the six-instruction following probe), `stats` (bootstrap
intervals), `report` (summaries, HumanOmniV2-shaped JSON, markdown tables and PNG charts).
Kept free of imports so that `import omni_jax.eval.scoring` stays light.
"""
