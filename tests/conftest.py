"""Suite-wide setup: one persistent XLA compilation cache for every test process.

The trainer tests start several training processes with the same tiny config (a reference run, a
run killed and resumed, multi-process runs), and the two xdist workers compile the same tiny
models; most of each run is compilation. JAX's persistent cache (under pytest's own cache folder,
`.pytest_cache/`) lets every process after the first load those executables instead. A cached
executable is the one a fresh compile of the same program produces, so results are unchanged
(the resume-equals-reference tests compare runs across it). One exception seen on XLA:CPU (jaxlib
0.10.2): a sharded step with collectives inside `lax.cond` branches ran fresh but, loaded from the
cache, deadlocked between its CPU devices (abort after 40 s); LoRA dropout was such a cond and is
decided while tracing now (omni_jax/model/lora.py). Set JAX_COMPILATION_CACHE_DIR to use another
folder; OMNI_JAX_TEST_COMPILATION_CACHE=0 turns it off.
"""

import os
import sys


def pytest_configure(config):
    if os.environ.get("OMNI_JAX_TEST_COMPILATION_CACHE", "1") == "0":
        return
    path = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(config.cache.mkdir("jax-compilation-cache")))
    if "jax" in sys.modules:  # imported before this hook (a plugin): tell the live config too
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
