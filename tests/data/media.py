"""Media fixtures: real H.264/AAC files made with the ffmpeg binary that imageio-ffmpeg ships."""

import pathlib
import subprocess



def ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def make_video(path, *, seconds=3.0, size=(160, 120), fps=25, audio=True, tone=440, source="testsrc",
               frames=None, crf=None):
    """Write an mp4: lavfi `source` video (H.264, yuv420p) and, if audio, a sine tone (AAC)."""
    path = pathlib.Path(path)
    w, h = size
    args = ["-f", "lavfi", "-i", f"{source}=size={w}x{h}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=44100"]
    args += ["-frames:v", str(frames)] if frames else ["-t", str(seconds)]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "30"]
    if crf is not None:
        args += ["-crf", str(crf)]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    ffmpeg(*args, str(path))
    return path
