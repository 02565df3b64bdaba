"""The two ways input can fail: one record is bad (skip it, count it) or a whole source is (stop)."""

from __future__ import annotations

# Every reason a record can be skipped for; counters and logs use these names.
REASONS = (
    "missing_file",  # the video / audio / image path does not exist
    "empty_file",  # zero bytes
    "corrupt_container",  # the demuxer or decoder failed
    "no_video_stream",  # a container without a video stream given as a video
    "no_audio_stream",  # audio asked for (interleaved mode) and the video has no track
    "bad_image",  # an image that Pillow cannot open
    "bad_geometry",  # a frame with an aspect ratio over 200 (qwen-omni-utils refuses it too)
    "malformed_row",  # a required field missing or of the wrong type
    "non_utf8_text",  # text fields that are not valid UTF-8
    "prompt_over_cap",  # more prompt tokens than max_prompt_tokens
)


class BadRecord(Exception):
    """One record cannot be used. `reason` is one of REASONS; the message says what and where."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown bad-record reason {reason!r}")
        super().__init__(f"[{reason}] {message}")
        self.reason = reason


class DataError(Exception):
    """The input as a whole cannot be used (a source with no good record, a bad config)."""
