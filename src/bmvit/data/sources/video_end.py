"""Where a video file's metadata says its video track ends (:func:`stream_end`).

The video track's own end counts, not the file's: a container's duration is its longest track's,
and phone and web videos often carry audio that outlasts the picture. The readers compare it with
where the decoded frames end, to tell a file cut short (:mod:`bmvit.data.sources.video`,
:mod:`bmvit.inference.video_source`).
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["stream_end"]


def _duration_tag(metadata: dict) -> Fraction | None:
    """A Matroska track's ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``) in seconds; None if absent or unreadable."""
    text = next((v for k, v in metadata.items() if k.upper().startswith("DURATION")), None)
    try:
        h, m, sec = str(text).strip().split(":")
        return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
    except (ValueError, ZeroDivisionError):
        return None


def stream_end(container, stream) -> Fraction | None:  # a PyAV InputContainer and its VideoStream
    """Where the metadata says the video track ends, in seconds after its start: the stream's
    duration, else its Matroska ``DURATION`` tag (the track's end time, as FFmpeg and mkvmerge write
    it), else the container's duration when the video is its only stream (with audio it is the
    longest track's); None when unknown, or when the duration is shorter than the stream's frame
    count at its average rate says (a broken track header: the frames are there, decoding finds
    their end)."""
    tb = Fraction(stream.time_base.numerator, stream.time_base.denominator) if stream.time_base else Fraction(1, 1_000_000)
    start = (stream.start_time or 0) * tb
    if stream.duration:
        rate = stream.average_rate
        if stream.frames and rate and Fraction(stream.frames - 2) / Fraction(rate) > stream.duration * tb:
            return None
        return stream.duration * tb
    tag = _duration_tag(stream.metadata)
    if tag is not None:
        return tag - start
    if container.duration and len(container.streams) == 1:
        return Fraction(container.duration, 1_000_000) - start
    return None
