"""Cloud TPU VM launcher for omni_jax: `python -m launch.tpu <create|setup|run|...>`.

Modules: `slices` (accelerator types), `commands` (gcloud argv lists), `remote` (the bash that
runs on every worker), `tpu` (the command line). Authentication is gcloud's own; no file here
holds a credential.
"""
