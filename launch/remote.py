"""The shell scripts run on every TPU VM worker through `gcloud ... ssh --worker=all --command=`.

Each function returns one POSIX sh script for one parse by the worker's login shell (bash or
dash alike; the tests run them under both). Fixed paths use `$HOME`; every value that comes from
the user goes through `shlex.quote`, so spaces, quotes and `$(...)` arrive as written. Layout on
each worker:

    ~/omni_jax/             the code, unpacked from `git archive` of one commit (COMMIT names it)
    ~/omni_jax_venv/        Python venv: requirements.txt + jax[tpu] at the requirements' jax pin
    ~/omni_jax_logs/train.log, train.pid
                            the training's stdout/stderr (appended across restarts) and the pid
                            of its process group
"""

from __future__ import annotations

import re
import shlex

from launch.slices import LaunchError

CODE = '"$HOME/omni_jax"'
VENV = '"$HOME/omni_jax_venv"'
LOG = '"$HOME/omni_jax_logs/train.log"'
PID = '"$HOME/omni_jax_logs/train.pid"'
# uv provides the Python the project needs (3.11+) on images whose system Python is older; it
# uses a system python3.11 when there is one and fetches a standalone build otherwise.
UV_VERSION = "0.13.9"
_HOST = '"$(hostname)"'
# `kill -0` also succeeds on a zombie, which an init that does not reap orphans leaves behind.
_ALIVE = 'alive() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]; }'


def jax_version(requirements_text: str, source: str = "requirements.txt") -> str:
    """The `jax==X` pin of a requirements file; jaxlib, when pinned, must carry the same X."""
    pins = {}
    for line in requirements_text.splitlines():
        match = re.fullmatch(r"\s*(jax|jaxlib)\s*==\s*([\w.+-]+)\s*(#.*)?", line)
        if match:
            pins[match.group(1)] = match.group(2)
    if "jax" not in pins:
        raise LaunchError(f"{source} has no `jax==X` line; pin jax there so the TPU workers "
                          "install jax[tpu] at the same version")
    if pins.get("jaxlib", pins["jax"]) != pins["jax"]:
        raise LaunchError(f"{source} pins jax=={pins['jax']} but jaxlib=={pins['jaxlib']}; "
                          "make them equal (jax[tpu] needs a matching jaxlib)")
    return pins["jax"]


def setup_script(tarball: str, commit: str, jax_version: str, python_version: str) -> str:
    """Unpack `~/<tarball>` as ~/omni_jax (replacing the old code), make the venv once, and install
    requirements.txt together with `jax[tpu]==<jax_version>` in one resolver pass (no pip cache:
    recent TPU VMs boot from a small disk)."""
    # PIP_BREAK_SYSTEM_PACKAGES lets the --user install of uv pass on images whose system Python
    # is marked externally managed (PEP 668); pip versions without that option ignore it.
    q = shlex.quote
    return f"""set -eu
rm -rf {CODE}.new && mkdir -p {CODE}.new
tar -xzf "$HOME"/{q(tarball)} -C {CODE}.new
rm -rf {CODE} && mv {CODE}.new {CODE} && rm -f "$HOME"/{q(tarball)}
echo {q(commit)} > {CODE}/COMMIT
if [ ! -x {VENV}/bin/python ]; then
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet {q("uv==" + UV_VERSION)}
  python3 -m uv venv --seed --python {q(python_version)} {VENV}
fi
{VENV}/bin/python -m pip install --quiet --no-cache-dir -r {CODE}/requirements.txt \\
  {q("jax[tpu]==" + jax_version)}
{VENV}/bin/python -c {q(_PRINT_VERSIONS)}
echo {_HOST}: ready at commit {q(commit[:12])}
"""


# Reads versions from package metadata: importing jax's TPU backend here would block on a
# multi-host slice until every worker joins.
_PRINT_VERSIONS = ('import importlib.metadata as m, platform; '
                   'print("python", platform.python_version(), "jax", m.version("jax"), '
                   '"libtpu", m.version("libtpu"))')


def train_argv(config: str, workdir: str, overrides: list[str]) -> list[str]:
    """The training's arguments after the interpreter; the same on every worker."""
    return ["-m", "omni_jax.train", "--config", config, "--workdir", workdir, *overrides]


# Environment values that must not appear in any command line (API keys) are copied to each
# worker in this file (relative to $HOME), read by the run script and deleted at once.
SECRET_FILE = ".omni_jax_secret.env"


def secret_env_text(env: dict[str, str]) -> str:
    """The SECRET_FILE contents: one `KEY='value'` assignment per line, read by `set -a; .`."""
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())


def run_script(argv: list[str], env: dict[str, str], already_running_ok: bool = False,
               check_after_seconds: float = 3.0, secret_file: bool = False) -> str:
    """Start `python <argv>` detached (own session, so it outlives the ssh connection), output
    appended to ~/omni_jax_logs/train.log, and fail with the log's end if it has died
    `check_after_seconds` later (a bad flag or config shows here, not hours later). Refuses (or,
    with `already_running_ok`, reports and succeeds) when this worker's training is still alive.
    With `secret_file`, the variables in ~/SECRET_FILE are exported too, and the file deleted."""
    q = shlex.quote
    # PYTHONUNBUFFERED: log lines reach train.log as they are printed, for `logs` to follow.
    env_words = " ".join(q(f"{k}={v}") for k, v in {"PYTHONUNBUFFERED": "1", **env}.items())
    words = " ".join(q(a) for a in argv)
    running_exit = 0 if already_running_ok else 1
    secrets = f'"$HOME/{SECRET_FILE}"'
    load_secrets = f"""if [ ! -f {secrets} ]; then
  echo {_HOST}": ~/{SECRET_FILE} (the --env values copied for this run) is missing" >&2
  exit 1
fi
set -a
. {secrets}
set +a
rm -f {secrets}
""" if secret_file else ""
    return f"""set -eu
{_ALIVE}
{load_secrets}if [ ! -x {VENV}/bin/python ]; then
  echo {_HOST}": not set up (no ~/omni_jax_venv); run 'python -m launch.tpu setup' first" >&2
  exit 1
fi
mkdir -p "$HOME/omni_jax_logs"
if [ -f {PID} ] && alive "$(cat {PID})"; then
  echo {_HOST}": training already running, pid $(cat {PID})" >&2
  exit {running_exit}
fi
cd {CODE}
echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) start on $(hostname), commit $(cat COMMIT) ===" >> {LOG}
rm -f {PID}
setsid sh -c 'echo $$ > "$1"; shift; exec "$@"' pidfile {PID} \\
  env {env_words} {VENV}/bin/python {words} >> {LOG} 2>&1 < /dev/null &
for _ in $(seq 50); do [ -s {PID} ] && break; sleep 0.1; done
sleep {float(check_after_seconds)}
if [ ! -s {PID} ] || ! alive "$(cat {PID})"; then
  echo {_HOST}": training exited at once; the end of ~/omni_jax_logs/train.log:" >&2
  tail -n 20 {LOG} >&2
  exit 1
fi
echo {_HOST}": started, pid $(cat {PID}), log ~/omni_jax_logs/train.log"
"""


def stop_script(grace_seconds: int) -> str:
    """SIGTERM the training's process group (the trainer checkpoints on SIGTERM), wait up to
    `grace_seconds` for it to exit, then SIGKILL what is left."""
    return f"""set -u
{_ALIVE}
if [ ! -f {PID} ] || ! alive "$(cat {PID})"; then
  echo {_HOST}": no training running"
  exit 0
fi
pid="$(cat {PID})"
kill -TERM "-$pid"
for _ in $(seq {int(grace_seconds) * 10}); do alive "$pid" || break; sleep 0.1; done
if alive "$pid"; then
  echo {_HOST}": still running after {int(grace_seconds)} s; sending SIGKILL"
  kill -KILL "-$pid"
fi
echo {_HOST}": stopped pid $pid"
"""


def status_script(tail_lines: int = 3) -> str:
    """One line per worker (running or not, which commit) and the last lines of its log."""
    return f"""set -u
{_ALIVE}
commit="$(cat {CODE}/COMMIT 2>/dev/null | cut -c1-12)"
if [ -f {PID} ] && alive "$(cat {PID})"; then
  echo {_HOST}": training running, pid $(cat {PID}), commit ${{commit:-none}}"
else
  echo {_HOST}": no training running, commit ${{commit:-none}}"
fi
[ -f {LOG} ] && tail -n {int(tail_lines)} {LOG} | sed "s/^/[$(hostname)] /"
exit 0
"""


def logs_script(lines: int, follow: bool) -> str:
    """Print (with `follow`, keep printing, waiting for the log to appear) the training log, each
    line prefixed by the worker's hostname so that `--worker=all` output stays readable."""
    prefix = 'sed -u "s/^/[$(hostname)] /"'
    if follow:
        return f"tail -n {int(lines)} -F {LOG} 2>/dev/null | {prefix}\n"
    return f"""if [ ! -f {LOG} ]; then
  echo {_HOST}": no log yet (~/omni_jax_logs/train.log)" >&2
  exit 1
fi
tail -n {int(lines)} {LOG} | {prefix}
"""
