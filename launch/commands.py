"""The gcloud (and local git) commands of a launch, as argv lists: pure functions, no shell.

Every value goes in its own argv element (`--zone=us-central2-b`), so nothing is parsed by a local
shell; the one string a shell does parse, the `--command` run on the workers, is built with
shlex quoting in `launch.remote`. Flag names checked against `gcloud <group> <command> --help`
(Google Cloud SDK 528) and https://cloud.google.com/sdk/gcloud/reference/compute/tpus.
"""

from __future__ import annotations

import dataclasses

QUEUED = ("gcloud", "compute", "tpus", "queued-resources")
TPU_VM = ("gcloud", "compute", "tpus", "tpu-vm")


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a slice lives. `name` is both the queued-resource id and the TPU node id."""

    name: str
    zone: str
    project: str | None = None

    def flags(self) -> list[str]:
        return [f"--zone={self.zone}"] + ([f"--project={self.project}"] if self.project else [])


def create(target: Target, accelerator_type: str, runtime_version: str, spot: bool,
           service_account: str | None = None) -> list[str]:
    """Queue a request for the slice; it becomes ACTIVE when Cloud TPU can provision it. The VMs
    act as `service_account` (default: the project's Compute Engine default account)."""
    argv = [*QUEUED, "create", target.name, f"--node-id={target.name}", *target.flags(),
            f"--accelerator-type={accelerator_type}", f"--runtime-version={runtime_version}"]
    if service_account:
        argv.append(f"--service-account={service_account}")
    return argv + (["--spot"] if spot else [])


def describe_state(target: Target) -> list[str]:
    """Prints one word, the queued resource's state: ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED..."""
    return [*QUEUED, "describe", target.name, *target.flags(), "--format=value(state.state)"]


def delete(target: Target) -> list[str]:
    """Delete the queued resource and, with --force, its TPU VMs; --quiet answers the prompt."""
    return [*QUEUED, "delete", target.name, *target.flags(), "--force", "--quiet"]


def ssh(target: Target, worker: str, command: str | None = None) -> list[str]:
    """Run `command` (one string, parsed by each worker's login shell) on `worker` ("all", "0",
    "1,3", "0-2"); without a command, an interactive session on one worker."""
    argv = [*TPU_VM, "ssh", target.name, *target.flags(), f"--worker={worker}"]
    return argv + ([f"--command={command}"] if command is not None else [])


def scp_to_workers(target: Target, local_path: str, remote_path: str) -> list[str]:
    """Copy one local file to `remote_path` (relative to the home directory) on every worker."""
    return [*TPU_VM, "scp", local_path, f"{target.name}:{remote_path}", *target.flags(),
            "--worker=all"]


def git_archive(repo: str, commit: str, output: str) -> list[str]:
    """A gzipped tarball of the tracked files at `commit`: exactly the code the workers run."""
    return ["git", "-C", repo, "archive", "--format=tar.gz", f"--output={output}", commit]
