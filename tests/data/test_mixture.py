import collections
import json
import threading

import numpy as np
import pytest

from omni_jax.data import collate, config, mixture, synthetic
from omni_jax.data.errors import BadRecord, DataError
from omni_jax.data.sources import ListSource


def fake_example(raw):
    """A cheap stand-in for prepare_record: prompt length depends on the record; some are bad."""
    if raw.get("bad"):
        raise BadRecord(raw["bad"], f"record {raw['id']}")
    n = 3 + raw["n"] % 40
    return {"input_ids": np.full((1, n), raw["n"], np.int32), "attention_mask": np.ones((1, n), np.int32),
            "use_audio_in_video": False, "record": {"id": raw["id"], "source": raw["src"]}}


def make_sources(sizes=(("a", 50), ("b", 30), ("c", 20)), bad_every=0):
    out = {}
    for name, size in sizes:
        recs = [{"id": f"{name}{i}", "src": name, "n": i} for i in range(size)]
        if bad_every:
            for r in recs[::bad_every]:
                r["bad"] = "corrupt_container"
        out[name] = ListSource(name, recs)
    return out


def make(seed=0, pi=0, pc=1, bs=4, weights=None, srcs=None, workers=2, **kw):
    return mixture.Mixture(srcs or make_sources(), weights or {"a": 0.5, "b": 0.3, "c": 0.2}, fake_example,
                           batch_size=bs, buckets=(8, 16, 32, 64), pad_token_id=-1, seed=seed,
                           process_index=pi, process_count=pc, num_workers=workers, **kw)


def ids(batches):
    return [r["id"] for b in batches for r in b["records"]]


def take(m, n):
    out = [next(m) for _ in range(n)]
    return out


def test_deterministic_given_seed_whatever_the_worker_count():
    a, b, c = make(workers=1), make(workers=3), make(seed=1)
    try:
        assert ids(take(a, 10)) == ids(take(b, 10))
        assert ids(take(c, 10)) != ids(take(make(), 10))
    finally:
        for m in (a, b, c):
            m.close()


def test_weights_are_respected():
    m = make(bs=50)
    counts = collections.Counter(r["source"] for b in take(m, 60) for r in b["records"])
    m.close()
    n = sum(counts.values())
    for name, w in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert abs(counts[name] / n - w) < 4 * np.sqrt(w * (1 - w) / n), counts


def test_epochs_visit_every_record_once():
    m = make(weights={"c": 1.0}, bs=20)
    first, second = ids(take(m, 1)), ids(take(m, 1))
    m.close()
    assert sorted(first) == sorted(second) == sorted(f"c{i}" for i in range(20))
    assert first != second  # reshuffled each epoch


def test_sharded_by_process():
    seen = {}
    for pi in range(3):
        m = make(pi=pi, pc=3, bs=10)
        seen[pi] = set(ids(take(m, 3)))
        m.close()
        for rid in seen[pi]:
            assert int(rid[1:]) % 3 == pi
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])
    with pytest.raises(DataError, match="too few"):
        make(srcs=make_sources((("a", 2),)), weights={"a": 1}, pi=2, pc=3)


def test_resume_continues_exactly_with_bad_records():
    m = make(srcs=make_sources(bad_every=7))
    take(m, 3)
    state = json.loads(json.dumps(m.state()))
    after = take(m, 5)
    counters = m.counters()
    m.close()
    r = make(srcs=make_sources(bad_every=7))
    r.restore(state)
    again = take(r, 5)
    assert ids(again) == ids(after)
    for x, y in zip(after, again):
        np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
    assert r.counters() == counters and any(k.startswith("skipped/") for k in counters)
    # restore on a running mixture rewinds it too
    r.restore(state)
    assert ids(take(r, 5)) == ids(after)
    r.close()


def test_bad_records_are_counted_and_skipped():
    m = make(srcs=make_sources(bad_every=5), bs=10)
    batches = take(m, 5)
    c = m.counters()
    m.close()
    assert all(len(b["records"]) == 10 for b in batches)
    got = ids(batches)
    assert all(int(i[1:]) % 5 for i in got)  # no bad record came through
    skipped = sum(v for k, v in c.items() if k.startswith("skipped/"))
    assert skipped > 0 and set(k.split("/")[2] for k in c if k.startswith("skipped/")) == {"corrupt_container"}
    assert sum(v for k, v in c.items() if k.startswith("examples/")) == 50


def test_all_bad_source_fails_fast():
    srcs = make_sources()
    srcs["b"] = ListSource("b", [{"id": f"b{i}", "src": "b", "n": i, "bad": "missing_file"} for i in range(500)])
    m = make(srcs=srcs, fail_fast_bad_records=16)
    with pytest.raises(DataError, match="source 'b': the first 16 records read were all bad .*missing_file"):
        take(m, 100)


def test_batches_bucketed_and_left_padded():
    m = make(bs=3)
    for b in take(m, 10):
        L = b["input_ids"].shape[1]
        lengths = b["attention_mask"].sum(1)
        assert L in (8, 16, 32, 64) and L == collate.bucket_length(int(lengths.max()), (8, 16, 32, 64))
        for row, mask, n in zip(b["input_ids"], b["attention_mask"], lengths):
            assert (mask[: L - n] == 0).all() and (mask[L - n:] == 1).all()  # left padding
            assert (row[: L - n] == -1).all()
    m.close()
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        collate.bucket_length(65, (8, 16, 32, 64))


def test_close_stops_the_prefetch_thread():
    before = threading.active_count()
    m = make()
    take(m, 2)
    m.close()
    assert threading.active_count() <= before


def test_synthetic_mixture_from_config_batches_media():
    cfg = config.data_defaults("tiny")
    cfg.batch_size = 3
    m = mixture.from_config(cfg, process_index=0, process_count=1)
    b = next(m)
    m.close()
    assert b["input_ids"].shape[0] == 3 and b["input_ids"].shape[1] in cfg.prompt_buckets
    assert b["video_grid_thw"].shape == (3, 3) and b["input_features"].shape[0] == 3
    per_video = b["video_grid_thw"].prod(1)
    assert b["pixel_values_videos"].shape[0] == per_video.sum()
    assert b["video_second_per_grid"].shape == (3,) and b["feature_attention_mask"].shape == b["input_features"].shape[::2]
    # records in batch order carry what the rewards need
    rec = synthetic.make_record(int(b["records"][0]["id"].rsplit("-", 1)[1]))
    assert b["records"][0]["answer"] == rec["answer"] and b["records"][0]["problem_type"] == "multiple choice"
