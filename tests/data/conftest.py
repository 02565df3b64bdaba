"""Session media fixtures for the data tests."""

import pytest

from .media import ffmpeg, make_video


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    """A few small files shared by the tests (made once per session)."""
    d = tmp_path_factory.mktemp("media")
    make_video(d / "av.mp4", seconds=3.0, size=(160, 120), fps=25, audio=True)
    make_video(d / "silent.mp4", seconds=2.0, size=(160, 120), fps=25, audio=False)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100", "-t", "2", str(d / "tone.wav"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100", "-t", "2", "-c:a", "aac", str(d / "tone.m4a"))
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(b"this is not a video container" * 50)
    data = (d / "av.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return d
