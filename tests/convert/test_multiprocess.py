"""Converted params restored on 2 processes × 4 CPU devices equal the one-process arrays, shard by shard."""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
from flax import nnx

import omni_jax
from omni_jax.convert.hf_to_orbax import hf_to_orbax
from tests.helpers import tiny_hf as th

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield ".".join(prefix + (k,)), np.asarray(v)


def test_two_processes_restore_the_same_arrays(tmp_path):
    hf = th.build_hf_thinker("a", seed=21)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="60KB")
    hf_to_orbax(tmp_path / "hf", tmp_path / "ckpt", progress=False)
    single = dict(_flat(nnx.state(omni_jax.load_thinker(tmp_path / "ckpt", progress=False), nnx.Param).to_pure_dict()))

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.helpers.multiprocess_restore", str(i), "2", str(port),
                               str(tmp_path / "hf"), str(tmp_path / "ckpt"), str(tmp_path / "mesh_ckpt"),
                               str(tmp_path / f"report{i}.json")], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        finally:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)

    reports = [json.loads((tmp_path / f"report{i}.json").read_text()) for i in range(2)]
    assert len({d for r in reports for d in r["devices"]}) == 8 and all(len(r["devices"]) == 4 for r in reports)
    for key in ("restored", "converted_on_mesh"):
        sharded = 0
        for name, full in single.items():
            covered = np.zeros(full.shape, bool)
            for report in reports:
                entry = report[key][name]
                assert entry["shape"] == list(full.shape)
                assert len(entry["shards"]) == 4  # one per local device
                for shard in entry["shards"]:
                    index = tuple(slice(a, b) for a, b in shard["index"])
                    want = hashlib.sha256(np.ascontiguousarray(full[index]).tobytes()).hexdigest()
                    assert shard["sha256"] == want, f"{key} {name} shard {index} differs from one-process array"
                    covered[index] = True
                    sharded += full[index].size < full.size
            assert covered.all(), f"{key} {name}: shards do not cover the array"
        assert sharded > 100, "too few parameters were actually split across devices for the test to mean much"
    spec = reports[0]["restored"]["model.layers.mlp.up_proj.kernel"]["spec"]
    assert "fsdp" in spec and "tp" in spec, spec
