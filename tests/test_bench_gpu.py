"""benchmarks/bench_gpu.py (run on a GPU machine) stays runnable: its tiny size on CPU, every field filled."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import bench_gpu  # noqa: E402


def test_tiny_run_reports_decode_and_train():
    out = bench_gpu.main(["--size", "tiny", "--decode_batch", "2,3", "--decode_prompt", "16", "--new", "12",
                          "--new_short", "4", "--rows", "4", "--prompt", "16", "--completion", "8",
                          "--train_steps", "1", "--json"])
    (d, d3), t = out["decode"], out["train"]
    assert d3["batch"] == 3 and d3["bytes_per_step"] > d["bytes_per_step"]
    assert d["batch"] == 2 and d["bytes_per_step"] > 0 and d["measured_bandwidth"] > 0
    # 2 layers × 64 wide (q 64×64, k/v 64×32, o 64×64, MLP 3×64×128, norms) + tied 512×64, bf16
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128 + 2 * 64
    kv = 2 * 2 * 2 * (16 + 8) * 2 * 16 * 2  # k,v × layers × batch × mean length × kv heads × head dim × bytes
    assert d["bytes_per_step"] == 2 * (2 * per_layer + 512 * 64) + kv
    assert t["rows"] == 4 and t["step_s"] > 0
    # 3 × forward matmul FLOPs per token × tokens; the counted FLOPs include attention and remat.
    assert t["model_flops"] == 3 * 2 * (2 * (64 * (64 + 2 * 32) + 64 * 64 + 3 * 64 * 128) + 64 * 512) * 4 * 24
    assert t["counted_flops"] > t["model_flops"]
