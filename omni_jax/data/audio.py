"""Audio for the Whisper-style encoder: mono 16 kHz waveform -> 128-bin log-mel + frame mask.

The log-mel is WhisperFeatureExtractor's numpy computation (periodic Hann window, n_fft 400, hop
160, power spectrum, slaney mel filters up to 8 kHz, log10, floor at max - 8, (x + 4) / 4),
vectorised over frames instead of its per-frame Python loop, and padded to the true length
rounded up to `audio_bucket_seconds` instead of to 300 s. Frames that feature_attention_mask
marks valid are identical to the extractor's (tests/data/test_audio.py); the encoder reads only
those.

Waveforms come from the video's own track or an audio file, decoded, downmixed and resampled by
the ffmpeg program (imageio-ffmpeg's, else one on PATH) with the cut to `audio_max_seconds` done
by ffmpeg itself, so only the kept part is decoded and held: a 1-hour track cut to 300 s holds 300 s
of samples, never the hour. Without any ffmpeg program decord decodes the whole track (its
AudioReader has no partial read) and the cut comes after. Both use ffmpeg's resampler; QOU uses
librosa's, so samples differ slightly from QOU's, not the layout.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile

import numpy as np

from omni_jax.data import media
from omni_jax.data.errors import BadRecord
from omni_jax.tokenizer import quiet_transformers_import


def load_audio(src, sampling_rate: int, max_seconds: float) -> np.ndarray | None:
    """Mono float32[S] at `sampling_rate`, at most max_seconds long; None when there is no track.

    src: a path or the file's bytes (any container ffmpeg reads: mp4, wav, m4a, ...), or a mono
    float32[S] waveform already at `sampling_rate`. Raises BadRecord for unreadable input.
    """
    max_samples = int(max_seconds * sampling_rate)
    if isinstance(src, np.ndarray):
        if src.ndim != 1:
            raise BadRecord("malformed_row", f"audio array must be mono float[S], got shape {src.shape}")
        wave = src.astype(np.float32)
    else:
        opened = media.open_media(src)
        exe = ffmpeg_program()
        wave = _decode_ffmpeg(exe, opened, src, sampling_rate, max_seconds) if exe else \
            _decode_decord(opened, src, sampling_rate, max_samples)
        if wave is None:
            return None
    if wave.size == 0:
        return None
    return wave[:max_samples]


@functools.lru_cache(maxsize=1)
def ffmpeg_program() -> str | None:
    """The ffmpeg executable: imageio-ffmpeg's (a requirement), else `ffmpeg` on PATH, else None."""
    try:
        import imageio_ffmpeg  # ships a static ffmpeg build

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


def _decode_ffmpeg(exe: str, opened, src, sampling_rate: int, max_seconds: float) -> np.ndarray | None:
    """The first max_seconds of the first audio stream, mono float32 at sampling_rate; None without one."""
    tmp = None
    if not isinstance(opened, str):  # bytes: ffmpeg needs a seekable file for mp4 (index at the end)
        tmp = tempfile.NamedTemporaryFile(suffix=".media", delete=False)
        tmp.write(opened.getbuffer())
        tmp.close()
        opened = tmp.name
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", opened, "-map", "0:a:0", "-vn",
           "-t", f"{max_seconds:.6f}", "-ac", "1", "-ar", str(sampling_rate), "-f", "f32le", "pipe:1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=max(120.0, 2 * max_seconds))
    except subprocess.TimeoutExpired:
        raise BadRecord("corrupt_container", f"{media.describe(src)}: decoding the audio did not finish") from None
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        if "matches no streams" in err:
            return None
        raise BadRecord("corrupt_container", f"{media.describe(src)}: {(err.splitlines() or ['ffmpeg failed'])[-1][:200]}")
    return np.frombuffer(proc.stdout, np.float32).copy()


def _decode_decord(opened, src, sampling_rate: int, max_samples: int) -> np.ndarray | None:
    import decord  # loads ffmpeg libraries: only readers need it

    try:
        reader = decord.AudioReader(opened, ctx=decord.cpu(0), sample_rate=sampling_rate, mono=True)
    except Exception as e:
        if "find audio stream" in str(e):
            return None
        raise BadRecord("corrupt_container", f"{media.describe(src)}: {str(e).splitlines()[0][:200]}") from None
    # The reader holds the whole track already; slicing copies only the kept samples.
    return np.asarray(reader[:max_samples].asnumpy()[0], np.float32)


@functools.lru_cache(maxsize=4)
def _mel_filters(n_fft: int, num_mel_bins: int, sampling_rate: int) -> np.ndarray:
    with quiet_transformers_import():
        from transformers.audio_utils import mel_filter_bank  # numpy only

    return mel_filter_bank(
        num_frequency_bins=1 + n_fft // 2,
        num_mel_filters=num_mel_bins,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=sampling_rate,
        norm="slaney",
        mel_scale="slaney",
    )


def log_mel(waveform: np.ndarray, num_samples: int, *, num_mel_bins: int = 128, n_fft: int = 400,
            hop_length: int = 160, sampling_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """Whisper log-mel of `waveform` zero-padded (or cut) to num_samples.

    waveform: float32[S]. Returns (float32[num_mel_bins, num_samples // hop_length] features,
    int32[num_samples // hop_length] mask: 1 for frames whose start lies inside the waveform).
    """
    valid = min(len(waveform), num_samples)
    x = np.zeros(num_samples, np.float32)
    x[:valid] = waveform[:valid]
    x = np.pad(x, (n_fft // 2, n_fft // 2), mode="reflect").astype(np.float64)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop_length]  # [F + 1, n_fft]
    # The extractor stores the FFT as complex64 and squares magnitudes in float64: same here.
    spec = np.fft.rfft(frames * window, axis=-1).astype(np.complex64)
    power = np.abs(spec, dtype=np.float64) ** 2  # [F + 1, n_fft / 2 + 1]
    mel = np.maximum(1e-10, np.dot(_mel_filters(n_fft, num_mel_bins, sampling_rate).T, power.T))
    log_spec = np.log10(mel).astype(np.float32)[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    features = ((log_spec + 4.0) / 4.0).astype(np.float32)
    num_frames = num_samples // hop_length
    mask = (np.arange(num_frames) * hop_length < valid).astype(np.int32)
    return features, mask


def padded_length(num_samples: int, sampling_rate: int, bucket_seconds: float, max_seconds: float) -> int:
    """Samples to pad a waveform to: its length rounded up to whole buckets, at most max_seconds."""
    bucket = int(bucket_seconds * sampling_rate)
    return min(max(1, math.ceil(num_samples / bucket)) * bucket, int(max_seconds * sampling_rate))


def audio_features(waveform: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(float32[num_mel_bins, F], int32[F]) for one waveform under the data config's audio knobs."""
    n = padded_length(len(waveform), cfg.sampling_rate, cfg.audio_bucket_seconds, cfg.audio_max_seconds)
    return log_mel(waveform, n, num_mel_bins=cfg.num_mel_bins, n_fft=cfg.n_fft,
                   hop_length=cfg.hop_length, sampling_rate=cfg.sampling_rate)


def audio_token_count(num_valid_frames: int) -> int:
    """Placeholder tokens for an audio of that many mel frames: two stride-2 reductions (25 / s)."""
    return ((num_valid_frames - 1) // 2 + 1 - 2) // 2 + 1
