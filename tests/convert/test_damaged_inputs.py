"""Damaged safetensors files are refused with the file and tensor named (as the `safetensors`
library refuses them, but never converted into garbage), and a failed or killed conversion leaves
nothing behind that blocks or bloats the next run."""

import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from omni_jax.convert.__main__ import main as cli
from omni_jax.convert.hf_to_orbax import hf_to_orbax
from omni_jax.weights.safetensors_io import SafetensorsReader
from tests.helpers import tiny_hf as th

REPO = str(pathlib.Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_b")
    th.build_hf_thinker("b", seed=5).save_pretrained(path, max_shard_size="60KB")  # 7 shards
    return path


def split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def rewrite(path, header, data):
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


def library_refuses(path) -> bool:
    try:
        with safe_open(str(path), framework="np") as f:
            for key in f.keys():
                f.get_tensor(key)
    except SafetensorError:
        return True
    return False


@pytest.fixture
def small(tmp_path):
    save_file({"a": np.arange(16, dtype=np.float32).reshape(4, 4), "b": np.ones(3, np.float32)},
              str(tmp_path / "model.safetensors"))
    return tmp_path / "model.safetensors"


def relabel(header, name, **changes):
    header[name].update(changes)
    return header


DAMAGE = {
    "F32 relabelled F16": (lambda h, d: (relabel(h, "a", dtype="F16"), d), "tensor a: F16 [4, 4] needs 32 bytes"),
    "F32 relabelled F64": (lambda h, d: (relabel(h, "b", dtype="F64"), d), "tensor b: F64 [3] needs 24 bytes"),
    "shape grown": (lambda h, d: (relabel(h, "a", shape=[4, 5]), d), "tensor a: F32 [4, 5] needs 80 bytes"),
    "truncated": (lambda h, d: (h, d[:-4]), "the file is truncated"),
    "bytes past the end": (lambda h, d: (h, d + b"\0" * 8), "data past its last tensor"),
    "overlapping ranges": (lambda h, d: (relabel(h, "b", data_offsets=[52, 64]), d), "overlap or leave a gap"),
    "negative dimension": (lambda h, d: (relabel(h, "b", shape=[-3]), d), "tensor b: shape [-3]"),
    "unknown dtype": (lambda h, d: (relabel(h, "b", dtype="Q8"), d), "tensor b: unsupported safetensors dtype"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_headers_are_refused_like_the_safetensors_library(small, damage):
    change, message = DAMAGE[damage]
    rewrite(small, *change(*split(small)))
    assert library_refuses(small)  # the reference refuses the same file
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        SafetensorsReader(small.parent)
    assert str(small) in str(err.value)


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b"[" * 100_000, b"[1, 2]"])
def test_a_garbage_header_names_the_file(small, garbage):
    small.write_bytes(struct.pack("<Q", len(garbage)) + garbage)
    with pytest.raises(ValueError) as err:
        SafetensorsReader(small.parent)
    assert str(small) in str(err.value)


def test_an_intact_file_still_reads_exactly(small):
    reader = SafetensorsReader(small.parent)
    np.testing.assert_array_equal(reader.read("a"), np.arange(16, dtype=np.float32).reshape(4, 4))
    np.testing.assert_array_equal(reader.read("a", slice(1, 3)), np.arange(4, 12, dtype=np.float32).reshape(2, 4))


def first_float32_tensor(directory):
    for shard in sorted(directory.glob("*.safetensors")):
        header, _ = split(shard)
        for name, meta in header.items():
            if name != "__metadata__" and meta["dtype"] == "F32" and len(meta["shape"]) == 2:
                return shard, name
    raise AssertionError("no float32 matrix in the tiny checkpoint")


@pytest.mark.parametrize("damage", ["relabelled", "truncated", "garbage header"])
def test_hf2jax_refuses_a_damaged_shard_and_writes_nothing(hf_dir, tmp_path, capsys, damage):
    src = tmp_path / "hf"
    shutil.copytree(hf_dir, src)
    shard, name = first_float32_tensor(src)
    header, data = split(shard)
    if damage == "relabelled":
        rewrite(shard, relabel(header, name, dtype="F16"), data)
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        shard.write_bytes(struct.pack("<Q", 9) + b"{garbage}")
    assert cli(["hf2jax", "--hf_dir", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert shard.name in err and (damage != "relabelled" or name in err)
    assert not (tmp_path / "out").exists()


FAILING_HF2JAX = r"""
import sys
from omni_jax.weights import safetensors_io
from omni_jax.convert.__main__ import main
read, calls = safetensors_io.SafetensorsReader.read, []
def failing(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 5:
        raise OSError("Input/output error (a disk failing mid-conversion)")
    return read(self, *args, **kwargs)
safetensors_io.SafetensorsReader.read = failing
sys.exit(main(["hf2jax", "--hf_dir", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_a_failed_hf2jax_leaves_no_unfinished_step_and_the_next_run_proceeds(hf_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-c", FAILING_HF2JAX, str(hf_dir), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode != 0 and "Input/output error" in proc.stderr, proc.stderr[-2000:]
    assert not [p.name for p in (tmp_path / "out").iterdir() if "orbax-checkpoint-tmp" in p.name]
    hf_to_orbax(hf_dir, tmp_path / "out", progress=False)  # no --overwrite needed
    assert (tmp_path / "out" / "0").is_dir()


def test_only_abandoned_partial_exports_are_removed(tmp_path):
    """A partial export whose writer still holds its lock is kept; a killed writer's is removed."""
    import fcntl
    import os

    from omni_jax.weights import hf_write

    out = tmp_path / "export"
    live, dead, young, old = (tmp_path / f".export.partial-{n}" for n in ("live", "dead", "young", "old"))
    for d in (live, dead, young, old):
        d.mkdir()
    fd = os.open(live / hf_write.LOCK_FILE, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another export, still running
    (dead / hf_write.LOCK_FILE).write_text("")  # its writer was killed: nobody holds the lock
    os.utime(old, (1, 1))  # no lock file and an hour old: left by an earlier version
    try:
        assert sorted(p.name for p in hf_write.remove_abandoned_partials(out)) == [dead.name, old.name]
    finally:
        os.close(fd)
    assert live.is_dir() and young.is_dir() and not dead.exists() and not old.exists()
