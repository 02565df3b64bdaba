"""`--env` values reach the workers but are never printed (command echo, --dry-run output,
errors), and `--env KEY` values (API keys) never appear in any command line at all: they travel
in a private file copied to the workers, which the run script reads and deletes."""

import os
import shutil
import stat

import pytest

from launch import remote, tpu
from launch_worker_fakes import run_on_worker, wait_for, write_exe
from test_launch_cli import RESUME, WHERE, FakeGcloud, cli, printed_commands

SECRET = "sk-do-not-print-0123456789 'quoted' $(touch PWNED)"
KEY = "OMNI_JAX_JUDGE_API_KEY"
RUN = ["run", *WHERE, "--accelerator-type", "v5p-8", "--config", "c.py", "--workdir", "gs://b/r"]
TRAIN = remote.train_argv("c.py", "gs://b/r", [])


class CopyingGcloud(FakeGcloud):
    """Also records, at the moment of each `scp`, the local file's contents and mode."""

    def __init__(self):
        super().__init__()
        self.copied = []

    def __call__(self, argv, **kwargs):
        if argv[0] == "gcloud" and argv[4] == "scp":
            local = argv[5]
            self.copied.append((local, open(local).read(), stat.S_IMODE(os.stat(local).st_mode)))
        return super().__call__(argv, **kwargs)


@pytest.fixture
def gcloud(monkeypatch):
    fake = CopyingGcloud()
    monkeypatch.setattr(tpu.subprocess, "run", fake)
    monkeypatch.setattr(tpu.time, "sleep", lambda seconds: None)
    return fake


def ssh_scripts(gcloud):
    return [a.removeprefix("--command=") for call in gcloud.calls for a in call if a.startswith("--command=")]


def test_inline_values_are_sent_but_printed_as_stars(gcloud, capsys):
    assert cli(*RUN, "--env", f"{KEY}={SECRET}", "--env", "XLA_FLAGS=--x=1") == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "--x=1" not in out + err
    assert f"{KEY}=***" in err and "XLA_FLAGS=***" in err
    (script,) = ssh_scripts(gcloud)
    assert script == remote.run_script(TRAIN, {KEY: SECRET, "XLA_FLAGS": "--x=1"})


def test_a_value_from_the_shell_is_in_no_command_line(gcloud, capsys, monkeypatch):
    monkeypatch.setenv(KEY, SECRET)
    assert cli(*RUN, "--env", KEY, "--env", "XLA_FLAGS=--x=1") == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert not any(SECRET in arg for call in gcloud.calls for arg in call)
    assert gcloud.verbs() == ["scp", "ssh:run"]
    (local, text, mode), = gcloud.copied
    assert text == remote.secret_env_text({KEY: SECRET}) and mode == 0o600
    assert gcloud.calls[0][6] == f"my-tpu:{remote.SECRET_FILE}" and "--worker=all" in gcloud.calls[0]
    assert not os.path.exists(local) and not os.path.exists(os.path.dirname(local))
    (script,) = ssh_scripts(gcloud)
    assert script == remote.run_script(TRAIN, {"XLA_FLAGS": "--x=1"}, secret_file=True)


RECORD_KEY = f"""#!/bin/sh
printf '%s' "${KEY}" > "$HOME/key"
trap 'exit 0' TERM
while :; do sleep 0.05; done
"""


@pytest.mark.parametrize("shell", [s for s in ("sh", "bash") if shutil.which(s)])
def test_the_worker_reads_the_copied_file_and_deletes_it(worker, shell):
    write_exe(worker / "omni_jax_venv" / "bin" / "python", RECORD_KEY)
    (worker / remote.SECRET_FILE).write_text(remote.secret_env_text({KEY: SECRET}))
    proc = run_on_worker(shell, remote.run_script(TRAIN, {}, secret_file=True, check_after_seconds=0.2), worker)
    assert proc.returncode == 0, proc.stderr
    wait_for(worker / "key")
    assert (worker / "key").read_text() == SECRET
    assert not (worker / remote.SECRET_FILE).exists() and not list(worker.rglob("PWNED"))
    assert SECRET not in (worker / "omni_jax_logs" / "train.log").read_text()
    missing = run_on_worker(shell, remote.run_script(TRAIN, {}, secret_file=True, check_after_seconds=0.1), worker)
    assert missing.returncode == 1 and "is missing" in missing.stderr


def test_dry_run_masks_values_unless_asked(gcloud, capsys, monkeypatch):
    monkeypatch.setenv(KEY, SECRET)
    assert cli(*RUN, "--env", f"X={SECRET}", "--env", KEY, "--dry-run") == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err and f"holds the values of {KEY}" in out
    scp, ssh = printed_commands(out)
    assert scp[4] == "scp" and "X=***" in ssh[-1]
    assert cli(*RUN, "--env", f"X={SECRET}", "--dry-run", "--show-env-values") == 0
    (ssh,) = printed_commands(capsys.readouterr().out)
    assert ssh[-1] == "--command=" + remote.run_script(TRAIN, {"X": SECRET})
    assert gcloud.calls == []


def test_resume_and_a_failing_run_print_no_value_and_leave_no_local_file(gcloud, capsys, monkeypatch):
    monkeypatch.setenv(KEY, SECRET)
    gcloud.states = ["ACTIVE"]
    assert cli(*RESUME, "--env", KEY, "--env", f"X={SECRET}") == 0
    assert gcloud.verbs() == ["describe", "scp", "ssh:run"]
    gcloud.fail_verb = "ssh"
    assert cli(*RUN, "--env", KEY, "--env", f"X={SECRET}") == 1
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "exited with status 1" in err
    assert len(gcloud.copied) == 2 and not any(os.path.exists(local) for local, _, _ in gcloud.copied)


def test_env_name_alone_must_be_set_locally(gcloud, capsys, monkeypatch):
    monkeypatch.delenv(KEY, raising=False)
    assert cli(*RUN, "--env", KEY) == 2
    assert f"{KEY} is not set in this shell's environment" in capsys.readouterr().err
    assert gcloud.calls == []
