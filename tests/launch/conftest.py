import os
import signal

import pytest

from launch_worker_fakes import FAKE_TRAINER, write_exe


@pytest.fixture
def worker(tmp_path):
    """A set-up worker's home: code dir with a COMMIT, venv with the fake trainer."""
    home = tmp_path / "home"
    (home / "omni_jax").mkdir(parents=True)
    (home / "omni_jax" / "COMMIT").write_text("0123456789abcdef\n")
    write_exe(home / "omni_jax_venv" / "bin" / "python", FAKE_TRAINER)
    yield home
    pid_file = home / "omni_jax_logs" / "train.pid"
    if pid_file.exists() and pid_file.read_text().strip():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass
