"""The worker scripts, executed here under dash (`sh`) and bash with a fake $HOME and fake
interpreters: what reaches the training process must be exactly what the user typed."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from launch import remote
from launch.slices import LaunchError
from launch_worker_fakes import (FAKE_CRASHING_TRAINER, HOSTILE_CONFIG, HOSTILE_OVERRIDES,
                                 HOSTILE_WORKDIR, REPO, alive, requirements_jax_pin,
                                 run_on_worker, wait_for, write_exe)

SHELLS = [s for s in ("sh", "bash") if shutil.which(s)]

@pytest.mark.parametrize("shell", SHELLS)
def test_run_passes_hostile_arguments_verbatim_and_stop_terminates(shell, worker):
    argv = remote.train_argv(HOSTILE_CONFIG, HOSTILE_WORKDIR, HOSTILE_OVERRIDES)
    env = {"XLA_FLAGS": "--xla_a=1 --xla_b='two words' $(touch PWNED4)"}
    proc = run_on_worker(shell, remote.run_script(argv, env, check_after_seconds=0.3), worker)
    assert proc.returncode == 0, proc.stderr
    wait_for(worker / "argv")
    wait_for(worker / "env")
    recorded = (worker / "argv").read_text().split("\0")[:-1]
    assert recorded == ["-m", "omni_jax.train", "--config", HOSTILE_CONFIG,
                        "--workdir", HOSTILE_WORKDIR, *HOSTILE_OVERRIDES]
    assert (worker / "env").read_text() == env["XLA_FLAGS"] + "|1"
    assert not list(worker.rglob("PWNED*")), "a $(...) or `...` in a value was executed"
    pid = int((worker / "omni_jax_logs" / "train.pid").read_text())
    assert f"pid {pid}" in proc.stdout
    assert os.getpgid(pid) == pid, "the trainer must lead its own process group"
    log = (worker / "omni_jax_logs" / "train.log").read_text()
    assert "commit 0123456789abcdef" in log

    status = run_on_worker(shell, remote.status_script(), worker)
    host = socket.gethostname()
    assert f"{host}: training running, pid {pid}, commit 0123456789ab" in status.stdout

    again = run_on_worker(shell, remote.run_script(argv, env, check_after_seconds=0.1), worker)
    assert again.returncode == 1 and "already running" in again.stderr
    tolerated = run_on_worker(
        shell, remote.run_script(argv, env, already_running_ok=True, check_after_seconds=0.1),
        worker)
    assert tolerated.returncode == 0 and "already running" in tolerated.stderr

    stop = run_on_worker(shell, remote.stop_script(grace_seconds=10), worker)
    assert stop.returncode == 0, stop.stderr
    assert f"stopped pid {pid}" in stop.stdout
    assert (worker / "got_term").read_text().strip() == "term"
    assert not alive(pid)
    status = run_on_worker(shell, remote.status_script(), worker)
    assert "no training running" in status.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_stop_kills_a_trainer_that_ignores_sigterm(shell, worker):
    write_exe(worker / "omni_jax_venv" / "bin" / "python",
              "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 0.05; done\n")
    proc = run_on_worker(shell, remote.run_script(["-m", "x"], {}, check_after_seconds=0.2),
                         worker)
    assert proc.returncode == 0, proc.stderr
    pid = int((worker / "omni_jax_logs" / "train.pid").read_text())
    stop = run_on_worker(shell, remote.stop_script(grace_seconds=1), worker)
    assert "sending SIGKILL" in stop.stdout
    time.sleep(0.2)
    assert not alive(pid)


@pytest.mark.parametrize("shell", SHELLS)
def test_run_reports_a_trainer_that_dies_at_once(shell, worker):
    write_exe(worker / "omni_jax_venv" / "bin" / "python", FAKE_CRASHING_TRAINER)
    proc = run_on_worker(shell, remote.run_script(["-m", "x"], {}, check_after_seconds=0.5),
                         worker)
    assert proc.returncode == 1
    assert "exited at once" in proc.stderr and "Traceback: bad config" in proc.stderr


def test_run_refuses_a_worker_that_was_never_set_up(tmp_path):
    proc = run_on_worker("sh", remote.run_script(["-m", "x"], {}), tmp_path)
    assert proc.returncode == 1 and "launch.tpu setup" in proc.stderr


def test_logs_prints_the_last_lines_with_the_hostname(worker):
    (worker / "omni_jax_logs").mkdir()
    (worker / "omni_jax_logs" / "train.log").write_text("one\ntwo\nthree\n")
    proc = run_on_worker("sh", remote.logs_script(lines=2, follow=False), worker)
    host = socket.gethostname()
    assert proc.stdout.splitlines() == [f"[{host}] two", f"[{host}] three"]
    missing = run_on_worker("sh", remote.logs_script(lines=2, follow=False), worker.parent)
    assert missing.returncode == 1 and "no log yet" in missing.stderr


FAKE_SYSTEM_PYTHON = r"""#!/bin/sh
echo "python3 $*" >> "$HOME/calls"
if [ "$1 $2 $3" = "-m uv venv" ]; then
  for last; do :; done
  mkdir -p "$last/bin"
  printf '#!/bin/sh\necho "venv-python $*" >> "$HOME/calls"\n' > "$last/bin/python"
  chmod +x "$last/bin/python"
fi
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_setup_unpacks_the_commit_and_installs_the_pinned_jax_tpu(shell, tmp_path):
    # A tiny repository whose requirements.txt is the real one; git archive as `setup` runs it.
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "requirements.txt", repo / "requirements.txt")
    (repo / "train.py").write_text("print('hi')\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    commit = subprocess.run([*git[:3], "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    home = tmp_path / "home"
    home.mkdir()
    subprocess.run([*git[:3], "archive", "--format=tar.gz", f"--output={home}/code.tar.gz",
                    commit], check=True)
    write_exe(tmp_path / "bin" / "python3", FAKE_SYSTEM_PYTHON)

    pin = requirements_jax_pin()
    assert remote.jax_version((repo / "requirements.txt").read_text()) == pin
    script = remote.setup_script("code.tar.gz", commit, pin, "3.11")
    proc = run_on_worker(shell, script, home, fake_bin=tmp_path / "bin")
    assert proc.returncode == 0, proc.stderr
    calls = (home / "calls").read_text().splitlines()
    assert calls[:3] == [
        f"python3 -m pip install --user --quiet uv=={remote.UV_VERSION}",
        f"python3 -m uv venv --seed --python 3.11 {home}/omni_jax_venv",
        f"venv-python -m pip install --quiet --no-cache-dir -r {home}/omni_jax/requirements.txt "
        f"jax[tpu]=={pin}",
    ]
    assert calls[3].startswith("venv-python -c import importlib.metadata")
    assert (home / "omni_jax" / "train.py").read_text() == "print('hi')\n"
    assert (home / "omni_jax" / "COMMIT").read_text().strip() == commit
    assert not (home / "code.tar.gz").exists()
    assert f"ready at commit {commit[:12]}" in proc.stdout

    # Setting up again (new code) reuses the venv: no second uv, the install runs again.
    (home / "calls").unlink()
    subprocess.run([*git[:3], "archive", "--format=tar.gz", f"--output={home}/code.tar.gz",
                    commit], check=True)
    proc = run_on_worker(shell, script, home, fake_bin=tmp_path / "bin")
    assert proc.returncode == 0, proc.stderr
    calls = (home / "calls").read_text().splitlines()
    assert [c for c in calls if c.startswith("python3")] == []
    assert calls[0].endswith(f"jax[tpu]=={pin}")


def test_jax_version_reads_the_pin_and_checks_jaxlib():
    assert remote.jax_version("numpy==2.0\njax==1.2.3  # pinned\njaxlib==1.2.3\n") == "1.2.3"
    assert remote.jax_version("jax == 0.9.1\n") == "0.9.1"
    with pytest.raises(LaunchError, match="no `jax==X`"):
        remote.jax_version("jaxlib==1.2.3\njax-foo==1.0\n")
    with pytest.raises(LaunchError, match="jaxlib==1.2.4"):
        remote.jax_version("jax==1.2.3\njaxlib==1.2.4\n")


def test_print_versions_snippet_is_valid_python():
    compile(remote._PRINT_VERSIONS, "<setup>", "exec")
    assert not re.search(r"import jax\b", remote._PRINT_VERSIONS)


def test_logs_follow_waits_for_the_log_and_streams_new_lines(worker):
    follower = subprocess.Popen(
        ["sh", "-c", remote.logs_script(lines=5, follow=True)], text=True, cwd=worker,
        env={"HOME": str(worker), "PATH": os.environ["PATH"]}, stdout=subprocess.PIPE,
        start_new_session=True)
    watchdog = threading.Timer(20, os.killpg, (follower.pid, signal.SIGKILL))
    watchdog.start()
    try:
        time.sleep(0.3)  # the log does not exist yet: tail -F waits for it
        (worker / "omni_jax_logs").mkdir()
        (worker / "omni_jax_logs" / "train.log").write_text("step 1 loss 0.5\n")
        assert follower.stdout.readline() == f"[{socket.gethostname()}] step 1 loss 0.5\n"
        with open(worker / "omni_jax_logs" / "train.log", "a") as log:
            log.write("step 2 loss 0.4\n")
        assert follower.stdout.readline() == f"[{socket.gethostname()}] step 2 loss 0.4\n"
    finally:
        watchdog.cancel()
        os.killpg(follower.pid, signal.SIGKILL)
        follower.wait()
