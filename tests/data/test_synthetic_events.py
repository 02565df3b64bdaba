import numpy as np

from omni_jax.data.synthetic_events import completion_for, make_event_video, oracle_similarity


def test_events_happen_at_their_frames():
    v = make_event_video(3, num_frames=12, num_events=3, size=56)
    assert v.frames.shape == (12, 56, 56, 3) and np.all(np.diff(v.event_frames) > 0)
    for e, f in enumerate(v.event_frames):
        assert v.labels[f, e] == 2 and (v.labels[:, e] == 2).sum() == 1
        # The event's frame differs from a standing frame of the same figure (its pose is drawn).
        standing = int(np.flatnonzero(v.labels[:, e] == 0)[0])
        slot = slice(e * 56 // 3, (e + 1) * 56 // 3)
        assert not np.array_equal(v.frames[f][:, slot], v.frames[standing][:, slot])
    assert make_event_video(3, num_frames=12, num_events=3, size=56).descriptions == v.descriptions


def test_oracle_without_noise_peaks_at_the_event():
    v = make_event_video(1)
    sim = oracle_similarity(v, 0.0, np.random.default_rng(0))
    assert np.array_equal(sim.argmax(1), v.event_frames)
    assert "<think>First, the person in the" in completion_for(v)
