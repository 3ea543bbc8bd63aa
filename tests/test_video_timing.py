"""Video files are read on a constant-rate grid (`video_source.constant_rate`): a variable-rate video
keeps its timing, a constant-rate one reads frame for frame."""

from fractions import Fraction

import av
import numpy as np
import pytest

from bmvit.inference.video_source import MAX_GAP_S, constant_rate, open_source

F = Fraction


def _grid(times, fps, durations=None):
    durations = durations or [None] * len(times)
    return list(constant_rate(((i, t, d) for i, (t, d) in enumerate(zip(times, durations))), F(fps)))


def test_constant_rate_is_frame_for_frame_despite_rounded_stamps():
    ntsc = F(30000, 1001)
    times = [F(round(i * 1000 / ntsc), 1000) for i in range(300)]  # 29.97 fps stamped in ms
    assert _grid(times, ntsc) == list(range(300))
    assert _grid([F(i, 25) + F(7, 3) for i in range(50)], 25) == list(range(50))  # a start offset


def test_variable_rate_is_resampled_by_time():
    times = [F(i, 30) for i in range(30)] + [1 + F(i, 10) for i in range(10)]  # 1 s at 30 fps, 1 s at 10
    out = _grid(times, 20, [F(1, 30)] * 30 + [F(1, 10)] * 10)  # 40 frames over 2 s: 20 fps average
    assert len(out) == 40
    assert out[:6] == [0, 2, 3, 5, 6, 8]  # 30 fps part: the nearest frame, every third dropped
    assert out[20:26] == [30, 30, 31, 31, 32, 32]  # 10 fps part: the frame on screen, each shown twice
    for k, i in enumerate(out):
        assert F(k, 20) - F(1, 10) < times[i] <= F(k, 20) + F(1, 40)


def test_discontinuities_and_missing_times():
    back = [F(i, 10) for i in range(10)] + [F(i, 10) for i in range(10)]  # timestamps restart
    assert _grid(back, 10) == list(range(20))
    gap = [F(i, 10) for i in range(5)] + [MAX_GAP_S + 100 + F(i, 10) for i in range(5)]  # a corrupt jump
    assert _grid(gap, 10) == list(range(10))
    pause = [F(0), F(1, 10), F(5, 10)]  # a real pause under MAX_GAP_S: the frame on screen repeats
    assert _grid(pause, 10) == [0, 1, 1, 1, 1, 2]
    assert _grid([None, F(0), None], 10) == [0, 2, 1]  # frames without a time pass straight through
    assert _grid([F(0), F(0), F(1, 10)], 10) == [1, 2]  # a duplicated stamp: the later frame
    assert _grid([F(0)], 10, [F(3, 10)]) == [0, 0, 0]  # the last frame is shown for its duration


def _write_vfr(path, times_ms):
    """H.264 with the given presentation times; each frame's grey level is its time / 20 ms."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = F(1, 1000)
        s.time_base = F(1, 1000)
        for t in times_ms:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), t // 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, F(1, 1000)
            c.mux(s.encode(frame))
        c.mux(s.encode(None))


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_variable_rate_file_keeps_its_timing(tmp_path, ext):
    times = [round(i * 1000 / 30) for i in range(60)] + [2000 + i * 100 for i in range(20)]  # 2 s at 30, 2 s at 10
    path = tmp_path / f"vfr.{ext}"
    _write_vfr(path, times)
    src = open_source(path)
    frames = list(src)
    fps = src.info.fps
    assert src.info.num_frames == len(frames)
    assert abs(len(frames) / fps - 4.0) < 0.15  # the 4 s of video, whatever the container calls its rate
    for k, f in enumerate(frames):  # frame k shows the video at k / fps (grey level = ms // 20)
        shown = int(f[24, 32].mean().round())
        assert abs(shown * 20 - 1000 * k / fps) <= 100 + 20, (k, shown)
    # the frame-for-frame reading of before: frame 70 would be 2.33 s of an 30-fps timeline but shows 3.0 s
    src = open_source(path, fps=30)
    assert len(list(src)) == 80
