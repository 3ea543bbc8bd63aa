"""Where a video file's metadata says its video track ends (:func:`stream_end`).

The video track's own end counts, not the file's: a container's duration is its longest track's,
and phone and web videos often carry audio that outlasts the picture. The readers compare it with
where the decoded frames end, to tell a file cut short (:mod:`bmvit.data.sources.video`,
:mod:`bmvit.inference.video_source`). When the metadata says nothing usable, :func:`decoded_end`
finds the end by decoding — only the last seconds when the container has a duration.
"""

from __future__ import annotations

from fractions import Fraction

from bmvit.errors import DataError

__all__ = ["decoded_end", "stream_end"]

TAIL_S = 10  # decoded_end: seconds before the container's end where decoding starts


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


def decoded_end(stream) -> Fraction:  # a bmvit.data.sources.video._Stream
    """Where the video track's decoded frames end (the last frame's time plus its duration), for a
    stream whose metadata gives no end (:func:`stream_end` is None: e.g. a WebM with audio and no
    per-track ``DURATION`` tag). Decoding runs to the end of the file either way; with a container
    duration (its longest track's end, an upper bound) it starts from a seek ``TAIL_S`` before it,
    so a long video costs one group of pictures and a few seconds of frames, not the whole file.
    Decodes from the start when there is no container duration or nothing decodes after the seek."""
    hint = stream.container.duration  # microseconds, or None
    if hint and Fraction(hint, 1_000_000) > TAIL_S:
        try:
            stream.seek(Fraction(hint, 1_000_000) - TAIL_S)
            end = _last_end(stream)
        except DataError:  # a failed seek: decode from the start below
            end = Fraction(0)
        if end > 0:
            return end
    stream.seek(Fraction(0))
    return _last_end(stream)


def _last_end(stream) -> Fraction:
    """End of the last frame decoded from the stream's position (0 if none decodes)."""
    return max((stream.time(f) + stream.duration_of(f) for f in stream.frames()), default=Fraction(0))
