"""MetricWriter: non-finite values are written as null, and a resume cuts all three outputs back."""

import json
import struct

from omni_jax import metrics


def _events(tb_dir):
    """(step, kind, tag) of every event in the TensorBoard files (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    out = []
    for f in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log"):
                out.append((event.step, "session_log", event.session_log.status))
            for v in event.summary.value:
                out.append((event.step, "scalar", v.tag))
    return out


def test_non_finite_values_are_null_not_dropped(tmp_path):
    w = metrics.MetricWriter(tmp_path, resume_step=0)
    w.write(1, {"loss": float("nan"), "grad_norm": float("inf"), "reward/total/mean": 0.5})
    w.close()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"step": 1, "loss": None, "grad_norm": None, "reward/total/mean": 0.5}
    metrics.plot_curves([row, {"step": 2, "loss": 1.0}], ["loss"], tmp_path / "c.png")  # nulls are skipped


def test_resume_cuts_metrics_samples_and_tensorboard_back(tmp_path):
    w = metrics.MetricWriter(tmp_path, resume_step=0)
    for step in range(1, 6):
        w.write(step, {"loss": float(step)})
        w.text(step, "samples", f"text of step {step}\nsecond line {step}")
    w.close()
    w = metrics.MetricWriter(tmp_path, resume_step=3)  # restored from the step-3 checkpoint
    w.write(4, {"loss": 40.0})
    w.text(4, "samples", "new text 4")
    w.close()
    assert [r["step"] for r in metrics.read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    samples = (tmp_path / "samples.txt").read_text()
    assert [l for l in samples.splitlines() if l.startswith("===")] == [f"=== step {s} samples ===" for s in (1, 2, 3, 4)]
    assert "second line 3" in samples and "text of step 4" not in samples and "new text 4" in samples
    # TensorBoard: a purge at step 4 hides the first run's steps 4 and 5 (written before it).
    events = _events(tmp_path / "tensorboard")
    purge = [e for e in events if e[1] == "session_log"]
    assert purge and purge[-1][0] == 4
    after_purge = events[events.index(purge[-1]):]
    assert [e[0] for e in after_purge if e[1] == "scalar" and e[2] == "loss"] == [4]
