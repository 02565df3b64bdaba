"""The kernel cache loads only the user's own libraries: a library planted where anyone can
compute the path (a hash of public inputs) is never loaded, so its constructor never runs, and
any load failure leaves XLA's ops in place instead of raising."""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from omni_jax.kernels import cpu_gemv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CC = shutil.which("cc") or shutil.which("gcc")
pytestmark = pytest.mark.skipif(CC is None, reason="making the planted library needs a C compiler")

PLANT = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
  FILE *f = fopen(getenv("PLANT_MARKER"), "w");
  if (f) { fputs("ran", f); fclose(f); }
}
"""
PROBE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    from omni_jax.kernels import cpu_gemv
    ok = cpu_gemv.available()
    print(json.dumps(dict(available=ok, error=cpu_gemv.build_error(),
                          marker=os.path.exists(os.environ["PLANT_MARKER"]))))
""")


def plant(tmp_path, monkeypatch, cxx, source=PLANT, dir_mode=0o700, file_mode=0o755, owner=None):
    """Put a library at the path the kernel cache computes for compiler `cxx`; returns that path."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(dir_mode)
    monkeypatch.setenv("OMNI_JAX_KERNEL_CACHE", str(cache))
    monkeypatch.setenv("CXX", cxx)
    path, _ = cpu_gemv._library_path()
    (tmp_path / "plant.c").write_text(source)
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(path), str(tmp_path / "plant.c")], check=True)
    path.chmod(file_mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def probe(tmp_path, umask=0o022):
    env = dict(os.environ, PLANT_MARKER=str(tmp_path / "constructor_ran"), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", PROBE.format(root=ROOT)], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_library_in_a_world_writable_cache_is_never_loaded(tmp_path, monkeypatch):
    path = plant(tmp_path, monkeypatch, "false", dir_mode=0o777)
    result, log = probe(tmp_path)
    assert not result["marker"] and not result["available"]  # "false" cannot build it elsewhere
    assert "not private" in log and "writable by group or others" in log
    assert path.exists()  # someone else's directory: left alone


def test_a_group_writable_entry_is_deleted_not_loaded(tmp_path, monkeypatch):
    path = plant(tmp_path, monkeypatch, "false", file_mode=0o775)
    result, log = probe(tmp_path)
    assert not result["marker"] and not result["available"] and "failed" in result["error"]
    assert not path.exists() and "deleting it and rebuilding" in log


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_an_entry_of_another_user_is_deleted_not_loaded(tmp_path, monkeypatch):
    plant(tmp_path, monkeypatch, "false", owner=65534)
    result, log = probe(tmp_path)
    assert not result["marker"] and not result["available"] and "owned by uid 65534" in log


def test_a_library_without_the_kernel_falls_back_to_xla(tmp_path, monkeypatch):
    """The user's own file (trusted, loaded) that lacks the kernel's symbols: XLA, not AttributeError."""
    plant(tmp_path, monkeypatch, "false", source="int unrelated(void) { return 1; }\n")
    result, _ = probe(tmp_path)
    assert not result["available"] and "not this version's kernel" in result["error"]


@pytest.mark.slow
def test_a_planted_entry_is_replaced_by_a_fresh_build(tmp_path, monkeypatch):
    """Under umask 002 (a common default) too: the fresh build is private and reused."""
    path = plant(tmp_path, monkeypatch, os.environ.get("CXX", "g++"), file_mode=0o777)
    result, _ = probe(tmp_path, umask=0o002)
    assert result["available"], result["error"]
    assert not result["marker"] and stat.S_IMODE(path.stat().st_mode) & 0o022 == 0
    built = path.stat().st_mtime_ns
    result, log = probe(tmp_path, umask=0o002)
    assert result["available"] and path.stat().st_mtime_ns == built and "deleting" not in log


def test_the_cache_directory_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("OMNI_JAX_KERNEL_CACHE", str(tmp_path / "new" / "kernels"))
    root, temporary = cpu_gemv._private_root()
    assert root == tmp_path / "new" / "kernels" and not temporary
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
