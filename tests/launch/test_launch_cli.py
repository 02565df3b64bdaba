"""`python -m launch.tpu`: exact --dry-run output, refusals, and the resume flow against a fake
gcloud. No real gcloud runs: every subprocess call other than local git is intercepted."""

import os
import shlex
import subprocess
import tempfile

import pytest

from launch import remote, tpu
from launch_worker_fakes import (HOSTILE_CONFIG, HOSTILE_OVERRIDES, REPO, requirements_jax_pin,
                                 run_on_worker, wait_for)

REAL_RUN = subprocess.run
WHERE = ["--name", "my-tpu", "--zone", "us-east5-a", "--project", "my-project"]
DESCRIBE = ("gcloud compute tpus queued-resources describe my-tpu --zone=us-east5-a "
            "--project=my-project '--format=value(state.state)'")


class FakeGcloud:
    """Stands in for subprocess.run: passes local git through, records gcloud argv and answers
    `describe` from a list of states ("NOT_FOUND" answers as gcloud does for a missing one)."""

    def __init__(self, states=(), fail_verb=None):
        self.states = list(states)
        self.fail_verb = fail_verb
        self.calls = []

    def __call__(self, argv, **kwargs):
        if argv[0] == "git":
            return REAL_RUN(argv, **kwargs)
        assert argv[0] == "gcloud", argv
        self.calls.append(argv)
        if argv[4] == "describe":
            state = self.states.pop(0)
            if state == "NOT_FOUND":
                return subprocess.CompletedProcess(argv, 1, "", "ERROR: NOT_FOUND: Resource x")
            return subprocess.CompletedProcess(argv, 0, state + "\n", "")
        if argv[4] == self.fail_verb:
            raise subprocess.CalledProcessError(1, argv)
        return subprocess.CompletedProcess(argv, 0)

    def verbs(self):
        """describe/create/delete/scp, and ssh named by the script it carries."""
        named = []
        for argv in self.calls:
            command = next((a for a in argv if a.startswith("--command=")), "")
            kind = ("setup" if "uv venv" in command else "run" if "omni_jax.train" in command
                    else "status" if "training running" in command else "")
            named.append(f"ssh:{kind}" if argv[4] == "ssh" else argv[4])
        return named


@pytest.fixture
def gcloud(monkeypatch):
    fake = FakeGcloud()
    monkeypatch.setattr(tpu.subprocess, "run", fake)
    monkeypatch.setattr(tpu.time, "sleep", lambda seconds: None)
    return fake


def printed_commands(out: str) -> list[list[str]]:
    """Split --dry-run output as a shell reading it would: '#' lines are notes, a command runs
    until its quotes close (a worker script spans several lines)."""
    commands, pending = [], ""
    for line in out.splitlines(keepends=True):
        if not pending and line.startswith("#"):
            continue
        pending += line
        try:
            argv = shlex.split(pending)
        except ValueError:  # "No closing quotation": the command goes on
            continue
        commands.append(argv)
        pending = ""
    assert not pending, f"unterminated command: {pending!r}"
    return commands


def cli(*argv):
    """main()'s exit status; argparse's own refusals exit through SystemExit."""
    try:
        return tpu.main(list(argv))
    except SystemExit as exit_:
        return exit_.code


def test_create_dry_run(gcloud, capsys):
    assert cli("create", *WHERE, "--accelerator-type", "v5p-8", "--spot", "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        "# v5p-8: 4 chips on 1 TPU VM(s), runtime v2-alpha-tpuv5, spot",
        "gcloud compute tpus queued-resources create my-tpu --node-id=my-tpu --zone=us-east5-a "
        "--project=my-project --accelerator-type=v5p-8 --runtime-version=v2-alpha-tpuv5 --spot",
        "# then, every 30 s until the state is ACTIVE:",
        DESCRIBE,
    ]
    assert gcloud.calls == []


def test_create_with_runtime_override_and_v5e_alias(gcloud, capsys):
    assert cli("create", "--name", "t", "--zone", "us-west4-a", "--accelerator-type", "v5e-16",
               "--version", "v2-alpha-tpuv5-lite", "--no-wait", "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        "# v5litepod-16: 16 chips on 4 TPU VM(s), runtime v2-alpha-tpuv5-lite",
        "gcloud compute tpus queued-resources create t --node-id=t --zone=us-west4-a "
        "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite",
    ]


def test_teardown_stop_logs_ssh_dry_run(gcloud, capsys):
    ssh = "gcloud compute tpus tpu-vm ssh my-tpu --zone=us-east5-a --project=my-project"
    assert cli("teardown", *WHERE, "--dry-run") == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "gcloud compute tpus queued-resources delete my-tpu --zone=us-east5-a "
        "--project=my-project --force --quiet")
    assert cli("stop", *WHERE, "--grace-seconds", "60", "--dry-run") == 0
    assert printed_commands(capsys.readouterr().out) == [
        [*shlex.split(ssh), "--worker=all", "--command=" + remote.stop_script(60)]]
    assert cli("logs", *WHERE, "--worker", "all", "--lines", "50", "--dry-run") == 0
    assert printed_commands(capsys.readouterr().out) == [
        [*shlex.split(ssh), "--worker=all", "--command=" + remote.logs_script(50, follow=True)]]
    assert cli("ssh", *WHERE, "--worker", "1", "--dry-run") == 0
    assert capsys.readouterr().out.strip() == ssh + " --worker=1"
    assert cli("ssh", *WHERE, "--worker", "all", "--dry-run", "--", "ls", "-la", "a b") == 0
    assert printed_commands(capsys.readouterr().out) == [
        [*shlex.split(ssh), "--worker=all", "--command=ls -la 'a b'"]]
    assert gcloud.calls == []


def test_status_dry_run_plans_for_the_assumed_state(gcloud, capsys):
    assert cli("status", *WHERE, "--dry-run") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == DESCRIBE
    assert lines[2] == "# queued resource my-tpu: ACTIVE"
    assert printed_commands(out)[1][:9] == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone=us-east5-a",
        "--project=my-project", "--worker=all"]
    assert cli("status", *WHERE, "--dry-run", "--assume-state", "SUSPENDED") == 0
    assert capsys.readouterr().out.splitlines()[2:] == ["# queued resource my-tpu: SUSPENDED"]


def test_setup_dry_run_ships_head_and_pins_jax_tpu_from_requirements(gcloud, capsys):
    commit = REAL_RUN(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                      text=True, check=True).stdout.strip()
    tarball = f"omni_jax-my-tpu-{commit[:12]}.tar.gz"
    local = os.path.join(tempfile.gettempdir(), tarball)
    assert cli("setup", *WHERE, "--dry-run") == 0
    commands = printed_commands(capsys.readouterr().out)
    assert commands[:2] == [
        ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={local}", commit],
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", local, f"my-tpu:{tarball}",
         "--zone=us-east5-a", "--project=my-project", "--worker=all"],
    ]
    ssh = commands[2]
    assert ssh[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu",
                       "--zone=us-east5-a", "--project=my-project", "--worker=all"]
    script = ssh[9].removeprefix("--command=")
    assert f"'jax[tpu]=={requirements_jax_pin()}'" in script
    assert f"tar -xzf \"$HOME\"/{tarball}" in script
    assert len(commands) == 3 and gcloud.calls == []


def test_run_dry_run_is_copy_paste_exact_through_both_shells(gcloud, capsys, worker):
    """The printed line, split as a local shell would, then its --command run by the worker's
    shell, hands the trainer exactly the user's hostile values."""
    workdir = "gs://bucket/run $(touch PWNED) 'q' \"dq\" `touch PWNED2`"
    env = "XLA_FLAGS=--a=1 'b c' $(touch PWNED3)"
    assert cli("run", *WHERE, "--accelerator-type", "v5p-16", "--config", HOSTILE_CONFIG,
               "--workdir", workdir, "--env", env, "--dry-run", "--show-env-values", "--",
               *HOSTILE_OVERRIDES) == 0
    (argv,) = printed_commands(capsys.readouterr().out)
    assert argv[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu",
                        "--zone=us-east5-a", "--project=my-project", "--worker=all"]
    assert len(argv) == 10 and argv[9].startswith("--command=")
    proc = run_on_worker("sh", argv[9].removeprefix("--command="), worker)
    assert proc.returncode == 0, proc.stderr
    wait_for(worker / "argv")
    wait_for(worker / "env")
    assert (worker / "argv").read_text().split("\0")[:-1] == [
        "-m", "omni_jax.train", "--config", HOSTILE_CONFIG, "--workdir", workdir,
        *HOSTILE_OVERRIDES]
    assert (worker / "env").read_text() == "--a=1 'b c' $(touch PWNED3)|1"
    assert not list(worker.rglob("PWNED*"))
    assert gcloud.calls == []


REFUSALS = [
    (["create", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v7-8"],
     "unknown accelerator type 'v7-8'"),
    (["create", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-12"],
     "multiples of 8"),
    (["create", "--name", "t", "--accelerator-type", "v5p-8"], "--zone"),
    (["create", "--name", "t", "--zone", "", "--accelerator-type", "v5p-8"], "--zone ''"),
    (["create", "--name", "t", "--zone", "us-east5-a; id", "--accelerator-type", "v5p-8"],
     "--zone"),
    (["create", "--name", "My TPU", "--zone", "us-east5-a", "--accelerator-type", "v5p-8"],
     "--name"),
    (["create", "--name", "t", "--zone", "us-east5-a", "--project", "p $(id)",
      "--accelerator-type", "v5p-8"], "--project"),
    (["create", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-8",
      "--runtime-version", "v2 alpha"], "--runtime-version"),
    (["create", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-8",
      "--service-account", "me; id"], "--service-account"),
    (["run", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-16",
      "--config", "c.py", "--workdir", "/home/me/run"], "gs://"),
    (["run", "--name", "t", "--zone", "us-west4-a", "--accelerator-type", "v5litepod-16",
      "--config", "c.py", "--workdir", "runs/x"], "each with its own disk"),
    (["resume", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v6e-16",
      "--config", "c.py", "--workdir", "/tmp/run"], "gs://"),
    (["run", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-8",
      "--config", "", "--workdir", "gs://b/r"], "--config is empty"),
    (["run", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-8",
      "--config", "c.py", "--workdir", "gs://b/r", "--env", "1BAD=x"], "--env name"),
    (["run", "--name", "t", "--zone", "us-east5-a", "--accelerator-type", "v5p-8",
      "--config", "c.py", "--workdir", "gs://b/r", "--env", "NOVALUE_X"], "--env NOVALUE_X=VALUE"),
    (["logs", "--name", "t", "--zone", "us-east5-a", "--worker", "all; id"], "--worker"),
    (["ssh", "--name", "t", "--zone", "us-east5-a", "--worker", "all"], "one worker"),
    (["teardown", "--name", "t", "--zone", "us-east5-a", "--", "x"], "nothing after"),
]


@pytest.mark.parametrize("argv,message", REFUSALS)
def test_bad_input_is_refused_before_any_gcloud(gcloud, capsys, argv, message):
    assert cli(*argv) == 2
    assert message in capsys.readouterr().err
    assert gcloud.calls == []


def test_local_workdir_on_one_host_is_allowed_with_a_warning(gcloud, capsys):
    assert cli("run", *WHERE, "--accelerator-type", "v5p-8", "--config", "c.py",
               "--workdir", "/home/me/run", "--dry-run") == 0
    assert "lost with the VM" in capsys.readouterr().err


RESUME = ["resume", *WHERE, "--accelerator-type", "v5p-16", "--spot", "--config",
          "configs/stage4_people_focus.py:model=7b", "--workdir", "gs://b/stage4"]


@pytest.mark.parametrize("states,verbs", [
    (["SUSPENDED", "WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"],
     ["describe", "delete", "create", "describe", "describe", "describe", "scp", "ssh:setup",
      "ssh:run"]),
    (["FAILED", "ACTIVE"], ["describe", "delete", "create", "describe", "scp", "ssh:setup",
                            "ssh:run"]),
    (["NOT_FOUND", "ACTIVE"], ["describe", "create", "describe", "scp", "ssh:setup", "ssh:run"]),
    (["PROVISIONING", "ACTIVE"], ["describe", "describe", "scp", "ssh:setup", "ssh:run"]),
    (["ACTIVE"], ["describe", "ssh:run"]),
])
def test_resume_brings_back_a_preempted_slice(gcloud, states, verbs):
    gcloud.states = states
    assert cli(*RESUME, "--", "--config.seed=1") == 0
    assert gcloud.verbs() == verbs
    create = [c for c in gcloud.calls if c[4] == "create"]
    assert all("--spot" in c and "--accelerator-type=v5p-16" in c for c in create)
    run = gcloud.calls[-1]
    train = remote.train_argv("configs/stage4_people_focus.py:model=7b", "gs://b/stage4",
                              ["--config.seed=1"])
    # The same command `run` sends, but a worker whose training is alive keeps it (exit 0).
    assert run[-1] == "--command=" + remote.run_script(train, {}, already_running_ok=True)
    assert run[-1] != "--command=" + remote.run_script(train, {}, already_running_ok=False)


def test_resume_dry_run_shows_the_preempted_path(gcloud, capsys):
    assert cli(*RESUME, "--dry-run", "--assume-state", "SUSPENDED") == 0
    commands = printed_commands(capsys.readouterr().out)
    assert [c[4] if c[0] == "gcloud" else c[0] for c in commands] == [
        "describe", "delete", "create", "describe", "git", "scp", "ssh", "ssh"]
    assert gcloud.calls == []


@pytest.mark.parametrize("states,message", [
    (["DELETING"], "DELETING"),
    (["SUSPENDED", "FAILED"], "is FAILED instead of becoming ACTIVE"),
])
def test_resume_stops_on_states_it_cannot_fix(gcloud, capsys, states, message):
    gcloud.states = states
    assert cli(*RESUME) == 2
    assert message in capsys.readouterr().err
    assert "ssh:run" not in gcloud.verbs()


def test_status_and_a_failing_command(gcloud, capsys):
    gcloud.states = ["ACTIVE", "SUSPENDED"]
    assert cli("status", *WHERE) == 0
    assert cli("status", *WHERE) == 0
    assert gcloud.verbs() == ["describe", "ssh:status", "describe"]
    assert "my-tpu: SUSPENDED" in capsys.readouterr().out
    gcloud.fail_verb = "ssh"
    assert cli("stop", *WHERE) == 1
    assert "exited with status 1" in capsys.readouterr().err


def test_create_waits_until_active(gcloud):
    gcloud.states = ["ACCEPTED", "WAITING_FOR_RESOURCES", "ACTIVE"]
    assert cli("create", *WHERE, "--accelerator-type", "v6e-8") == 0
    assert gcloud.verbs() == ["create", "describe", "describe", "describe"]
