"""The accuracy measurement's scoring: a noiseless oracle is matched perfectly; noise costs argmax more than the DP."""

from benchmarks.timestamps_accuracy import run


def test_noiseless_oracle_is_exact_and_dp_beats_argmax_under_noise():
    rows = run(videos=40, frames=12, events=4, noises=[0.0, 0.04], lambdas=[0.0])
    by = {(r["noise"], r["method"]): r for r in rows}
    assert by[(0.0, "argmax")]["exact"] == by[(0.0, "dp")]["exact"] == 1.0
    assert by[(0.04, "dp")]["within_1"] > by[(0.04, "argmax")]["within_1"]
    assert all(r["events"] == 160 for r in rows)
