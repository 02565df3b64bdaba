import pathlib

import numpy as np
import pytest
from transformers import WhisperFeatureExtractor

from omni_jax.data import audio, config


def whisper(waveform, numpy_path: bool, monkeypatch=None):
    """Qwen2.5-Omni's feature extractor settings (128 bins, 300 s), as its processor calls it."""
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400)
    if numpy_path:
        import transformers.models.whisper.feature_extraction_whisper as m

        monkeypatch.setattr(m, "is_torch_available", lambda: False)
    out = fe(waveform, sampling_rate=16000, return_attention_mask=True, padding="max_length", return_tensors="np")
    return out["input_features"][0], out["attention_mask"][0]


@pytest.mark.parametrize("seconds", [0.5, 3.7, 31.0])
def test_log_mel_identical_to_whisper_feature_extractor(seconds, monkeypatch):
    rng = np.random.default_rng(int(seconds * 10))
    n = int(seconds * 16000) + 37
    t = np.arange(n) / 16000
    wave = (0.2 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    cfg = config.data_defaults()
    feats, mask = audio.audio_features(wave, cfg)
    ref_torch, ref_mask = whisper(wave, numpy_path=False)
    ref_np, _ = whisper(wave, numpy_path=True, monkeypatch=monkeypatch)
    valid = int(ref_mask.sum())
    assert valid == int(mask.sum()) == -(-n // 160)
    np.testing.assert_array_equal(mask, ref_mask[: len(mask)])
    # padded to whole 30 s buckets, not 300 s
    assert feats.shape == (128, 3000 * max(1, -(-n // 480000)))
    # bit-identical to the extractor's numpy computation on the valid frames
    np.testing.assert_array_equal(feats[:, :valid], ref_np[:, :valid])
    # and within float32 rounding of its torch STFT path (HF documents the two paths agree to ~1e-5)
    np.testing.assert_allclose(feats[:, :valid], ref_torch[:, :valid], atol=5e-5)


def test_token_count_formula():
    # Oracle: conv stride 2 (kernel 3, pad 1) then avg-pool 2 over the valid mel frames.
    for frames in [1, 2, 3, 4, 5, 100, 199, 200, 201, 3000, 30000]:
        after_conv = (frames - 1) // 2 + 1
        assert audio.audio_token_count(frames) == (after_conv - 2) // 2 + 1
    assert audio.audio_token_count(100 * 60) == 1500  # 25 tokens per second


def test_padded_length_buckets():
    sr = 16000
    assert audio.padded_length(1, sr, 30.0, 300.0) == 30 * sr
    assert audio.padded_length(30 * sr + 1, sr, 30.0, 300.0) == 60 * sr
    assert audio.padded_length(10**9, sr, 30.0, 300.0) == 300 * sr


def test_load_audio_from_video_track_file_and_bytes(media_dir):
    wave = audio.load_audio(str(media_dir / "av.mp4"), 16000, 300.0)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 3 * 16000) < 0.05 * 16000
    # the 440 Hz sine is the dominant frequency
    spec = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spec) * 16000 / len(wave) - 440) < 5
    same = audio.load_audio((media_dir / "av.mp4").read_bytes(), 16000, 300.0)
    np.testing.assert_array_equal(same, wave)
    for name in ("tone.wav", "tone.m4a"):
        w = audio.load_audio(str(media_dir / name), 16000, 300.0)
        assert abs(len(w) - 32000) < 800
    assert len(audio.load_audio(str(media_dir / "tone.wav"), 16000, 1.0)) == 16000  # cut at max_seconds


def test_video_without_track_has_no_audio(media_dir):
    assert audio.load_audio(str(media_dir / "silent.mp4"), 16000, 300.0) is None


def test_only_the_kept_part_of_a_long_track_is_decoded(tmp_path):
    """A 2-minute track cut to 2 s: the memory Python allocates is that of the 2 s kept, not the track's."""
    import tracemalloc

    from .media import ffmpeg

    path = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "120", "-c:a", "aac", "-b:a", "24k",
           str(path))
    tracemalloc.start()
    try:
        wave = audio.load_audio(str(path), 16000, 2.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(wave) == 32000
    spec = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spec) * 16000 / len(wave) - 440) < 5
    # The track is 1.9 M samples (7.7 MB as float32; whole decoding allocated 100 MB and more); 2 s are 128 kB.
    assert peak < 2_000_000, f"{peak / 1e6:.1f} MB allocated to keep 2 s of a 2-minute track"


_PEAK = r"""
import sys
from omni_jax.data import audio

def hwm():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])

audio.load_audio(sys.argv[2], 16000, 1.0)  # libraries loaded
base = hwm()
wave = audio.load_audio(sys.argv[1], 16000, 300.0)
print(len(wave), (hwm() - base) / 1024)
"""


@pytest.mark.slow
def test_a_long_track_peaks_at_the_kept_part(media_dir, tmp_path):
    """A 20-minute track in an mp4 cut to 300 s: peak RSS grows by about the 300 s kept (19 MB), not by
    the whole track decoded (decord's AudioReader grew by 1.1 to 3.7 GB on a 60-minute one)."""
    import subprocess
    import sys

    from .media import ffmpeg

    path = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "1200", "-c:a", "aac", str(path))
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path), str(media_dir / "av.mp4")], check=True,
                         capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parents[2]).stdout
    samples, mb = out.split()
    assert int(samples) == 300 * 16000
    assert float(mb) < 100, f"peak RSS grew by {mb} MB"
