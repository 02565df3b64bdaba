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
folder; OMNI_JAX_TEST_COMPILATION_CACHE=0 turns it off. With pytest's cache plugin off (`-p
no:cacheprovider`) the folder is a fresh temporary one.

XLA compiles with most of its optimizations off (JAX_DISABLE_MOST_OPTIMIZATIONS=1, for this process
and the runs it starts): the same programs, compiled faster, for tiny models whose run time is
small next to their compile time (a 2-core machine's whole suite: several minutes less). Results
agree with the optimized build within the tests' tolerances; the exact comparisons (resume, two
processes) compare runs compiled alike. Set JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test with them on.
The fit check's tests (tests/aot) always compile with them on: they measure the compiled programs.
"""

import os
import sys
import tempfile


def pytest_configure(config):
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    if "jax" in sys.modules:  # imported before this hook (a plugin): tell the live config too
        import jax

        off = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].strip().lower() not in ("0", "false", "no", "off", "")
        jax.config.update("jax_disable_most_optimizations", off)
    if os.environ.get("OMNI_JAX_TEST_COMPILATION_CACHE", "1") == "0":
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
        folder = cache.mkdir("jax-compilation-cache") if cache else tempfile.mkdtemp(prefix="jax-compilation-cache-")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    path = os.environ["JAX_COMPILATION_CACHE_DIR"]
    if "jax" in sys.modules:  # imported before this hook (a plugin): tell the live config too
        import jax

        jax.config.update("jax_compilation_cache_dir", path)
