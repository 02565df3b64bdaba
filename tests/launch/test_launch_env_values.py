"""`--env` values (API keys) reach the workers but are never printed: not in the `+ command` echo,
not in --dry-run output, not in errors; `--env KEY` takes the value from the local environment."""

import pytest

from launch import remote, tpu
from test_launch_cli import RESUME, WHERE, FakeGcloud, cli, printed_commands

SECRET = "sk-do-not-print-0123456789"
RUN = ["run", *WHERE, "--accelerator-type", "v5p-8", "--config", "c.py", "--workdir", "gs://b/r"]


@pytest.fixture
def gcloud(monkeypatch):
    fake = FakeGcloud()
    monkeypatch.setattr(tpu.subprocess, "run", fake)
    monkeypatch.setattr(tpu.time, "sleep", lambda seconds: None)
    return fake


def sent_scripts(gcloud):
    return [a for call in gcloud.calls for a in call if a.startswith("--command=")]


@pytest.mark.parametrize("env_flag", [f"OMNI_JAX_JUDGE_API_KEY={SECRET}", "OMNI_JAX_JUDGE_API_KEY"])
def test_run_sends_the_value_but_prints_only_the_name(gcloud, capsys, monkeypatch, env_flag):
    monkeypatch.setenv("OMNI_JAX_JUDGE_API_KEY", SECRET)
    assert cli(*RUN, "--env", env_flag, "--env", "XLA_FLAGS=--x=1") == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "--x=1" not in out + err
    assert "OMNI_JAX_JUDGE_API_KEY=***" in err and "XLA_FLAGS=***" in err
    (script,) = sent_scripts(gcloud)
    assert f"OMNI_JAX_JUDGE_API_KEY={SECRET}" in script and "XLA_FLAGS=--x=1" in script


def test_dry_run_masks_values_unless_asked(gcloud, capsys):
    assert cli(*RUN, "--env", f"KEY={SECRET}", "--dry-run") == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    (argv,) = printed_commands(out)
    assert "KEY=***" in argv[-1]
    assert cli(*RUN, "--env", f"KEY={SECRET}", "--dry-run", "--show-env-values") == 0
    (argv,) = printed_commands(capsys.readouterr().out)
    train = remote.train_argv("c.py", "gs://b/r", [])
    assert argv[-1] == "--command=" + remote.run_script(train, {"KEY": SECRET})
    assert gcloud.calls == []


def test_resume_and_a_failing_run_do_not_print_values(gcloud, capsys):
    gcloud.states = ["ACTIVE"]
    assert cli(*RESUME, "--env", f"KEY={SECRET}") == 0
    gcloud.fail_verb = "ssh"
    assert cli(*RUN, "--env", f"KEY={SECRET}") == 1
    out, err = capsys.readouterr()
    assert SECRET not in out + err and "exited with status 1" in err
    assert all(SECRET in script for script in sent_scripts(gcloud))


def test_env_name_alone_must_be_set_locally(gcloud, capsys, monkeypatch):
    monkeypatch.delenv("OMNI_JAX_JUDGE_API_KEY", raising=False)
    assert cli(*RUN, "--env", "OMNI_JAX_JUDGE_API_KEY") == 2
    assert "OMNI_JAX_JUDGE_API_KEY is not set in this shell's environment" in capsys.readouterr().err
    assert gcloud.calls == []
