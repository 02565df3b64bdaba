"""Exact gcloud argv of every builder; flag names as in `gcloud ... --help` (SDK 528)."""

from launch import commands
from launch.commands import Target

T = Target("my-tpu", "us-east5-a", "my-project")
T_NO_PROJECT = Target("my-tpu", "us-central2-b")


def test_create_queued_resource():
    assert commands.create(T, "v5p-8", "v2-alpha-tpuv5", spot=True) == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "my-tpu",
        "--node-id=my-tpu", "--zone=us-east5-a", "--project=my-project",
        "--accelerator-type=v5p-8", "--runtime-version=v2-alpha-tpuv5", "--spot"]
    assert commands.create(T_NO_PROJECT, "v4-8", "tpu-ubuntu2204-base", spot=False) == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "my-tpu",
        "--node-id=my-tpu", "--zone=us-central2-b",
        "--accelerator-type=v4-8", "--runtime-version=tpu-ubuntu2204-base"]
    assert commands.create(T_NO_PROJECT, "v6e-8", "v2-alpha-tpuv6e", spot=False,
                           service_account="sa@p.iam.gserviceaccount.com")[-1] == (
        "--service-account=sa@p.iam.gserviceaccount.com")


def test_describe_and_delete():
    assert commands.describe_state(T) == [
        "gcloud", "compute", "tpus", "queued-resources", "describe", "my-tpu",
        "--zone=us-east5-a", "--project=my-project", "--format=value(state.state)"]
    assert commands.delete(T_NO_PROJECT) == [
        "gcloud", "compute", "tpus", "queued-resources", "delete", "my-tpu",
        "--zone=us-central2-b", "--force", "--quiet"]


def test_ssh_and_scp():
    assert commands.ssh(T, "all", "echo hi") == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone=us-east5-a",
        "--project=my-project", "--worker=all", "--command=echo hi"]
    assert commands.ssh(T_NO_PROJECT, "1") == [
        "gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone=us-central2-b",
        "--worker=1"]
    assert commands.scp_to_workers(T_NO_PROJECT, "/tmp/code.tar.gz", "code.tar.gz") == [
        "gcloud", "compute", "tpus", "tpu-vm", "scp", "/tmp/code.tar.gz", "my-tpu:code.tar.gz",
        "--zone=us-central2-b", "--worker=all"]


def test_hostile_values_stay_one_argv_element():
    command = "echo 'a b' \"$(touch x)\" `id`; rm -rf ~"
    argv = commands.ssh(T, "all", command)
    assert argv[-1] == "--command=" + command
    assert len(argv) == 10


def test_git_archive():
    assert commands.git_archive("/src/omni jax", "abc123", "/tmp/o.tar.gz") == [
        "git", "-C", "/src/omni jax", "archive", "--format=tar.gz", "--output=/tmp/o.tar.gz",
        "abc123"]
