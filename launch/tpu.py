"""`python -m launch.tpu`: a Cloud TPU slice from creation to teardown, training on every worker.

    create    queue the slice (queued resources; --spot) and wait until it is ACTIVE
    setup     ship `git archive <ref>` to every worker, make the venv, pip install
              requirements.txt + jax[tpu] at the requirements' jax pin
    run       start `python -m omni_jax.train --config C --workdir W [-- overrides]` detached on
              every worker (one command, the same everywhere), logs in ~/omni_jax_logs/
    resume    after a spot preemption: re-create the slice if needed, set it up, run again; the
              trainer resumes from the checkpoint in the (gs://) workdir
    logs, status, stop, ssh, teardown

Common flags: --name, --zone, [--project]; `--dry-run` prints the exact commands instead of
running them (it still reads the local git repository to name the commit it would ship).
Authentication is gcloud's own (`gcloud auth login`); nothing here reads or stores credentials.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launch import commands, remote
from launch.commands import Target
from launch.slices import LaunchError, TpuSlice, parse_accelerator_type

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 30
PREEMPTED = ("SUSPENDING", "SUSPENDED", "FAILED")  # the slice is gone; the request must be redone
PENDING = ("CREATING", "ACCEPTED", "WAITING_FOR_RESOURCES", "PROVISIONING")
NOT_FOUND = "NOT_FOUND"  # our name for "no queued resource of that name"

_NAME = r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
_ZONE = r"[a-z]+(-[a-z]+)*[0-9]+-[a-z]"
_PROJECT = r"([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]"
_RUNTIME = r"[a-z0-9][-a-z0-9.]*"
_WORKER = r"all|\d+([-,]\d+)*"
_ENV_KEY = r"[A-Za-z_][A-Za-z0-9_]*"
_SERVICE_ACCOUNT = r"[a-z0-9][-a-z0-9.]*@[-a-z0-9.]+"


def _check(value: str, pattern: str, what: str, hint: str) -> str:
    if not re.fullmatch(pattern, value):
        raise LaunchError(f"{what} {value!r} is not valid: {hint}")
    return value


def make_target(name: str, zone: str, project: str | None) -> Target:
    _check(name, _NAME, "--name", "lowercase letters, digits and '-', starting with a letter")
    _check(zone, _ZONE, "--zone", "a Cloud TPU zone such as us-central2-b or europe-west4-a")
    if project is not None:
        _check(project, _PROJECT, "--project", "a Google Cloud project id such as my-project")
    return Target(name, zone, project)


def check_workdir(workdir: str, tpu: TpuSlice) -> str | None:
    """Raise for a workdir that cannot work; return a warning for one that is risky."""
    if not workdir:
        raise LaunchError("--workdir is empty: give a gs://bucket/path")
    if workdir.startswith("gs://"):
        return None
    if tpu.multi_host:
        raise LaunchError(
            f"--workdir {workdir!r} is not on GCS, but {tpu.accelerator_type} has {tpu.workers} "
            "workers, each with its own disk: checkpoints must go to one shared place. Use "
            "--workdir gs://<bucket>/<run>")
    return (f"--workdir {workdir!r} is on the TPU VM's own disk: it is lost with the VM (spot "
            "preemption, teardown), so the run cannot resume. Prefer gs://<bucket>/<run>.")


def parse_env(pairs: list[str], local_env: dict[str, str] | None = None
              ) -> tuple[dict[str, str], dict[str, str]]:
    """(`KEY=VALUE` pairs, `KEY`-alone pairs with the value KEY has in this shell's environment
    `local_env`). The latter never appear in a command line: see `secret_file`."""
    local_env = os.environ if local_env is None else local_env
    inline, from_shell = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        _check(key, _ENV_KEY, "--env name", "letters, digits and '_'")
        if sep:
            inline[key] = value
        elif key in local_env:
            from_shell[key] = local_env[key]
        else:
            raise LaunchError(f"--env {key}: {key} is not set in this shell's environment; "
                              f"export it first, or write --env {key}=VALUE")
    return inline, from_shell


@contextlib.contextmanager
def secret_file(env: dict[str, str], dry_run: bool):
    """A local file (0600, in a fresh 0700 directory, deleted afterwards) holding `env` for the
    workers; None when `env` is empty. Under --dry-run nothing is written: its would-be path."""
    if not env:
        yield None
        return
    if dry_run:
        yield os.path.join(tempfile.gettempdir(), "omni_jax-XXXXXXXX", remote.SECRET_FILE)
        return
    directory = tempfile.mkdtemp(prefix="omni_jax-")
    try:
        path = os.path.join(directory, remote.SECRET_FILE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(remote.secret_env_text(env))
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def masked(env: dict[str, str]) -> dict[str, str]:
    """What is printed of `--env` values: the names only (values may be API keys)."""
    return {key: "***" for key in env}


def resume_phases(state: str) -> list[str]:
    """What brings a slice back to training, given its queued resource's state."""
    if state == NOT_FOUND:
        return ["create", "wait", "setup", "run"]
    if state in PREEMPTED:
        return ["delete", "create", "wait", "setup", "run"]
    if state in PENDING:
        return ["wait", "setup", "run"]
    if state == "ACTIVE":
        return ["run"]
    raise LaunchError(f"the queued resource is {state}; run resume again once that has finished")


def tarball_path(name: str, commit: str) -> str:
    """Named after the slice too, so that setting up two slices at once cannot mix the files."""
    return os.path.join(tempfile.gettempdir(), f"omni_jax-{name}-{commit[:12]}.tar.gz")


def setup_commands(target: Target, repo: str, commit: str, requirements_text: str,
                   python_version: str, local_path: str) -> list[list[str]]:
    """git archive -> scp to every worker -> unpack, venv, pip install (see remote.setup_script)."""
    tarball = os.path.basename(local_path)
    jax_version = remote.jax_version(requirements_text, f"requirements.txt at {commit[:12]}")
    script = remote.setup_script(tarball, commit, jax_version, python_version)
    return [commands.git_archive(repo, commit, local_path),
            commands.scp_to_workers(target, local_path, tarball),
            commands.ssh(target, "all", script)]


class Shell:
    """Runs commands, echoing each to stderr. With `dry_run` it runs nothing and prints each
    command to stdout, ready to paste into a shell (a worker script spans several lines inside
    its quotes); notes start with '#'."""

    def __init__(self, dry_run: bool, assume_state: str = "ACTIVE"):
        self.dry_run = dry_run
        self.assume_state = assume_state

    def note(self, text: str) -> None:
        print(f"# {text}" if self.dry_run else text, flush=True)

    def run(self, argv: list[str], shown: list[str] | None = None) -> None:
        """Run `argv`; what is printed is `shown` when given (argv with secrets masked)."""
        shown = argv if shown is None else shown
        if self.dry_run:
            print(shlex.join(shown))
            return
        print(f"+ {shlex.join(shown)}", file=sys.stderr, flush=True)
        subprocess.run(argv, check=True)

    def state(self, target: Target) -> str:
        """The queued resource's state, or NOT_FOUND."""
        argv = commands.describe_state(target)
        if self.dry_run:
            self.run(argv)
            self.note(f"dry run: assuming the state is {self.assume_state} (see --assume-state)")
            return self.assume_state
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        if NOT_FOUND in proc.stderr or "not found" in proc.stderr.lower():
            return NOT_FOUND
        raise LaunchError(f"`{shlex.join(argv)}` failed:\n{proc.stderr.strip()}")

    def wait_until_active(self, target: Target, poll_seconds: float = POLL_SECONDS) -> None:
        if self.dry_run:
            self.note(f"then, every {poll_seconds} s until the state is ACTIVE:")
            self.run(commands.describe_state(target))
            return
        from rich.console import Console  # only the real wait shows a spinner

        start = time.monotonic()
        with Console(stderr=True).status(f"{target.name}: waiting") as spinner:
            while (state := self.state(target)) != "ACTIVE":
                if state not in PENDING:
                    raise LaunchError(f"{target.name} is {state} instead of becoming ACTIVE; "
                                      "see `gcloud compute tpus queued-resources describe`")
                minutes = (time.monotonic() - start) / 60
                spinner.update(f"{target.name}: {state}, waited {minutes:.0f} min (Ctrl-C stops "
                               "waiting; the request stays queued)")
                time.sleep(poll_seconds)
        print(f"{target.name}: ACTIVE", file=sys.stderr)


def _git(repo: str, *args: str) -> str:
    proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)
    if proc.returncode:
        raise LaunchError(f"git {' '.join(args)} in {repo} failed: {proc.stderr.strip()}")
    return proc.stdout


def do_setup(shell: Shell, target: Target, ref: str, python_version: str, repo: str) -> None:
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    requirements = _git(repo, "show", f"{commit}:requirements.txt")
    if ref == "HEAD" and _git(repo, "status", "--porcelain", "--untracked-files=no").strip():
        print("warning: uncommitted changes are not shipped; the workers get commit "
              f"{commit[:12]} as committed", file=sys.stderr)
    local_path = tarball_path(target.name, commit)
    try:
        for argv in setup_commands(target, repo, commit, requirements, python_version, local_path):
            shell.run(argv)
    finally:
        if not shell.dry_run:
            with contextlib.suppress(FileNotFoundError):
                os.remove(local_path)


def _check_run_request(args: argparse.Namespace) -> None:
    """Refuse a bad training request before anything is created or started."""
    tpu = parse_accelerator_type(args.accelerator_type)
    if not args.config:
        raise LaunchError("--config is empty: give configs/<file>.py[:<variant>]")
    warning = check_workdir(args.workdir, tpu)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    parse_env(args.env)


def _run_commands(target: Target, args: argparse.Namespace, overrides: list[str], already_running_ok: bool,
                  secret_path: str | None) -> list[tuple[list[str], list[str]]]:
    """The commands that start the training, each as (argv, argv as printed: `--env KEY=VALUE`
    values as *** unless --show-env-values): with `--env KEY` variables, first the copy of
    `secret_path` (holding their values) to every worker, then the ssh command."""
    train = remote.train_argv(args.config, args.workdir, overrides)
    inline, from_shell = parse_env(args.env)
    shown_env = inline if args.show_env_values else masked(inline)
    ssh = [commands.ssh(target, "all", remote.run_script(train, env, already_running_ok, secret_file=bool(from_shell)))
           for env in (inline, shown_env)]
    copy = [(commands.scp_to_workers(target, secret_path, remote.SECRET_FILE),) * 2] if from_shell else []
    return [*copy, (ssh[0], ssh[1])]


def _start_training(shell: Shell, target: Target, args: argparse.Namespace, overrides: list[str],
                    already_running_ok: bool) -> None:
    _, from_shell = parse_env(args.env)
    with secret_file(from_shell, shell.dry_run) as path:
        if path:
            shell.note(f"{path} holds the values of {', '.join(from_shell)} from your environment "
                       "(written 0600, deleted after the copy; the workers delete their copy on start)")
        for argv, shown in _run_commands(target, args, overrides, already_running_ok, path):
            shell.run(argv, shown)


def _create_argv(target: Target, args: argparse.Namespace, shell: Shell) -> list[str]:
    tpu = parse_accelerator_type(args.accelerator_type)
    runtime = _check(args.runtime_version or tpu.runtime_version, _RUNTIME, "--runtime-version",
                     "a TPU software version such as v2-alpha-tpuv5")
    if args.service_account:
        _check(args.service_account, _SERVICE_ACCOUNT, "--service-account",
               "an email such as trainer@my-project.iam.gserviceaccount.com")
    shell.note(f"{tpu.accelerator_type}: {tpu.chips} chips on {tpu.workers} TPU VM(s), runtime "
               f"{runtime}{', spot' if args.spot else ''}")
    return commands.create(target, tpu.accelerator_type, runtime, args.spot, args.service_account)


def handle(args: argparse.Namespace, extra: list[str], shell: Shell) -> None:
    target = make_target(args.name, args.zone, args.project)
    worker = _check(getattr(args, "worker", "all"), _WORKER, "--worker", "all, 0, 1,3 or 0-2")
    if args.command == "create":
        shell.run(_create_argv(target, args, shell))
        if not args.no_wait:
            shell.wait_until_active(target)
    elif args.command == "setup":
        do_setup(shell, target, args.ref, args.python, args.repo)
    elif args.command == "run":
        _check_run_request(args)
        _start_training(shell, target, args, extra, already_running_ok=False)
    elif args.command == "resume":
        _check_run_request(args)
        create_argv = _create_argv(target, args, shell)
        for phase in resume_phases(shell.state(target)):
            if phase == "delete":
                shell.run(commands.delete(target))
            elif phase == "create":
                shell.run(create_argv)
            elif phase == "wait":
                shell.wait_until_active(target)
            elif phase == "setup":
                do_setup(shell, target, args.ref, args.python, args.repo)
            else:
                _start_training(shell, target, args, extra, already_running_ok=True)
    elif args.command == "logs":
        shell.run(commands.ssh(target, worker, remote.logs_script(args.lines, not args.no_follow)))
    elif args.command == "status":
        state = shell.state(target)
        shell.note(f"queued resource {target.name}: {state}")
        if state == "ACTIVE":
            shell.run(commands.ssh(target, "all", remote.status_script()))
    elif args.command == "stop":
        shell.run(commands.ssh(target, "all", remote.stop_script(args.grace_seconds)))
    elif args.command == "teardown":
        shell.run(commands.delete(target))
        shell.note("the TPU VMs and their disks are gone; the gs:// workdir is kept")
    elif args.command == "ssh":
        if worker == "all" and not extra:
            raise LaunchError("an interactive session needs one worker: --worker 0")
        shell.run(commands.ssh(target, worker, shlex.join(extra) if extra else None))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="queued resource id and TPU node id")
    common.add_argument("--zone", required=True,
                        help="e.g. us-central2-b; what a zone offers: gcloud compute tpus "
                             "accelerator-types list --zone=Z")
    common.add_argument("--project", help="Google Cloud project (default: gcloud's core/project)")
    common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    common.add_argument("--assume-state", default="ACTIVE", metavar="STATE",
                        choices=("ACTIVE", *PENDING, *PREEMPTED, "DELETING", NOT_FOUND),
                        help="with --dry-run: the queued-resource state to plan for "
                             f"(ACTIVE, SUSPENDED, {NOT_FOUND}, ...)")

    slice_flags = argparse.ArgumentParser(add_help=False)
    slice_flags.add_argument("--accelerator-type", required=True,
                             help="v4-8, v5p-8, v5litepod-16 (or v5e-16), v6e-8, ...")
    create = argparse.ArgumentParser(add_help=False)
    create.add_argument("--runtime-version", "--version", dest="runtime_version",
                        help="TPU software version (default: the docs' JAX image for the type)")
    create.add_argument("--spot", action="store_true", help="spot capacity: cheaper, preemptible")
    create.add_argument("--service-account",
                        help="what the VMs act as, e.g. for the gs:// bucket (default: the "
                             "project's Compute Engine default service account)")
    setup = argparse.ArgumentParser(add_help=False)
    setup.add_argument("--ref", default="HEAD", help="git commit or branch to ship (committed)")
    setup.add_argument("--python", default="3.11", help="Python version of the workers' venv")
    setup.add_argument("--repo", default=str(REPO_ROOT), help=argparse.SUPPRESS)
    train = argparse.ArgumentParser(add_help=False)
    train.add_argument("--config", required=True, help="configs/<file>.py[:<variant args>]")
    train.add_argument("--workdir", required=True, help="gs://<bucket>/<run> (checkpoints, logs)")
    train.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                       help="environment variable for the training (repeatable); printed as "
                            "KEY=***. KEY alone: this shell's value of KEY, copied to the workers "
                            "in a file, never on a command line (for API keys)")
    train.add_argument("--show-env-values", action="store_true",
                       help="print --env values in commands (e.g. --dry-run output to paste)")
    worker = argparse.ArgumentParser(add_help=False)
    worker.add_argument("--worker", default="0", help="0, 1, ..., or all")

    parser = argparse.ArgumentParser(
        prog="python -m launch.tpu", description=__doc__.split("\n\n")[0],
        epilog="After `--`: for run/resume, flags passed to omni_jax.train "
               "(e.g. -- --config.learning_rate=1e-6); for ssh, the command to run.")
    sub = parser.add_subparsers(dest="command", required=True)
    create_only = sub.add_parser("create", parents=[common, slice_flags, create],
                                 help="queue the slice and wait until it is ACTIVE")
    create_only.add_argument("--no-wait", action="store_true", help="return once queued")
    sub.add_parser("setup", parents=[common, setup], help="ship code, install on every worker")
    sub.add_parser("run", parents=[common, slice_flags, train], help="start training everywhere")
    sub.add_parser("resume", parents=[common, slice_flags, create, setup, train],
                   help="re-create a preempted slice if needed, set up, run")
    logs = sub.add_parser("logs", parents=[common, worker], help="print / follow train.log")
    logs.add_argument("--lines", type=int, default=100)
    logs.add_argument("--no-follow", action="store_true")
    sub.add_parser("status", parents=[common], help="slice state, training state per worker")
    stop = sub.add_parser("stop", parents=[common], help="SIGTERM training (checkpoints), wait")
    stop.add_argument("--grace-seconds", type=int, default=300)
    sub.add_parser("teardown", parents=[common], help="delete the slice (spending stops)")
    sub.add_parser("ssh", parents=[common, worker], help="shell on a worker, or -- COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.command not in ("run", "resume", "ssh"):
        parser.error(f"{args.command} takes nothing after `--`")
    try:
        handle(args, extra, Shell(args.dry_run, args.assume_state))
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(f"error: {shlex.join(error.cmd[:5])} ... exited with status {error.returncode}; "
              "its output is above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
