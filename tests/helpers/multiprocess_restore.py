"""One process of the 2-process × 4-CPU-device checkpoint test (launched by the test, not by pytest).

    python -m tests.helpers.multiprocess_restore PROCESS_ID NUM_PROCESSES PORT HF_DIR CKPT MESH_CKPT REPORT

Restores CKPT (converted on one process) onto a data=1, fsdp=4, tp=2 mesh spanning both
processes, converts HF_DIR again on that mesh into MESH_CKPT (each process reads and writes its
own shards) and restores that too. Writes, per process, the sha256 of every addressable shard
with its index, so the test can compare them with slices of the one-process arrays.
"""

import hashlib
import json
import os
import sys


def shard_report(model) -> dict:
    import numpy as np
    from flax import nnx

    out = {}
    for path, leaf in _flat(nnx.state(model, nnx.Param).to_pure_dict()):
        out[path] = {
            "shape": list(leaf.shape),
            "spec": str(leaf.sharding.spec),
            "shards": [{"device": s.device.id, "index": [[sl.start or 0, sl.stop if sl.stop is not None else dim]
                                                         for sl, dim in zip(s.index, leaf.shape)],
                        "sha256": hashlib.sha256(np.ascontiguousarray(np.asarray(s.data)).tobytes()).hexdigest()}
                       for s in leaf.addressable_shards],
        }
    return out


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield ".".join(prefix + (k,)), v


def main(process_id, num_processes, port, hf_dir, ckpt, mesh_ckpt, report):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", int(num_processes), int(process_id))

    import omni_jax
    from omni_jax import parallel
    from omni_jax.convert.hf_to_orbax import hf_to_orbax

    assert jax.device_count() == 4 * int(num_processes) and jax.local_device_count() == 4
    layout = parallel.Layout(parallel.make_mesh({"data": 1, "fsdp": 4, "tp": 2}))
    restored = omni_jax.load_thinker(ckpt, layout=layout, progress=False)
    hf_to_orbax(hf_dir, mesh_ckpt, layout=layout, progress=False)
    converted = omni_jax.load_thinker(mesh_ckpt, layout=layout, progress=False)
    with open(report, "w") as f:
        json.dump({"process": jax.process_index(), "devices": [d.id for d in jax.local_devices()],
                   "restored": shard_report(restored), "converted_on_mesh": shard_report(converted)}, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    assert "--xla_force_host_platform_device_count=4" in os.environ.get("XLA_FLAGS", "")
    main(*sys.argv[1:])
