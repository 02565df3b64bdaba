"""Fakes shared by the launch tests: a worker's $HOME with a stand-in trainer, and a way to run a
worker script here the way a TPU VM's login shell would."""

import os
import pathlib
import subprocess
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
_REAL_RUN = subprocess.run  # bound at import: CLI tests replace subprocess.run with a fake gcloud

# A stand-in for ~/omni_jax_venv/bin/python: records its argv (NUL-separated) and two env vars,
# then runs until SIGTERM, which it records.
FAKE_TRAINER = r"""#!/bin/sh
printf '%s\0' "$@" > "$HOME/argv"
printf '%s' "${XLA_FLAGS-unset}|${PYTHONUNBUFFERED-unset}" > "$HOME/env"
trap 'echo term > "$HOME/got_term"; exit 0' TERM
while :; do sleep 0.05; done
"""
FAKE_CRASHING_TRAINER = """#!/bin/sh
echo "Traceback: bad config" >&2
exit 3
"""

HOSTILE_CONFIG = "configs/my config.py:model=7b,num_generations=8"
HOSTILE_WORKDIR = "gs://bucket/run $(touch PWNED) 'single' \"double\" `touch PWNED2`; touch PWNED3"
HOSTILE_OVERRIDES = ["--config.note=it's $HOME & ${PATH}", "--config.multi=a\nb", "--", "*"]


def requirements_jax_pin() -> str:
    """Oracle: the jax pin read from the real requirements.txt, line by line."""
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.startswith("jax=="):
            return line[len("jax=="):].strip()
    raise AssertionError("requirements.txt has no jax== line")


def write_exe(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def run_on_worker(shell: str, script: str, home: pathlib.Path, fake_bin=None, timeout=30):
    path = os.environ["PATH"] if fake_bin is None else f"{fake_bin}:{os.environ['PATH']}"
    return _REAL_RUN([shell, "-c", script], env={"HOME": str(home), "PATH": path},
                          capture_output=True, text=True, timeout=timeout, cwd=home)


def alive(pid: int) -> bool:
    """Running and not a zombie (this sandbox's init may not reap orphans)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(path: pathlib.Path, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


