"""Ring buffer and clip windows; live streaming: schedule, latency, dropped frames, the CLI's stream mode."""

from __future__ import annotations

import json
import math
import threading
import time

import av
import numpy as np
import pytest
import torch
from inference_fixtures import LABELS, make_checkpoint, synthetic_frames, tiny_config, tiny_model, write_video

from bmvit.cli.main import main as bmvit
from bmvit.errors import ConfigError
from bmvit.inference.detector import Detector
from bmvit.inference.stream import BackgroundVideoWriter, StreamReport, run_stream
from bmvit.inference.video_source import ArraySource
from bmvit.inference.windows import RingBuffer, SlidingClips, clip_indices, keyframe_indices

torch.set_num_threads(1)


def test_ring_buffer_keeps_the_newest_items():
    ring = RingBuffer(3)
    for i in range(5):
        assert ring.push(i * 10) == i
    assert ring.oldest == 2 and [ring[i] for i in (2, 3, 4)] == [20, 30, 40]
    with pytest.raises(IndexError):
        ring[1]


@pytest.mark.parametrize("n", [1, 5, 23, 40])
@pytest.mark.parametrize("T, tau", [(8, 2), (4, 3), (5, 1)])
def test_sliding_clips_equal_direct_indexing(n, T, tau):
    """Every key frame's clip from the ring buffer equals the clamped clip of the whole video."""
    video = np.arange(n)
    keys = keyframe_indices(n, fps=10, per_second=2)
    window = SlidingClips(T, tau, iter(keys))
    got = []
    for f in video:
        got += window.push(np.array(f))
    got += window.flush()
    assert [k for k, _ in got] == keys
    for k, clip in got:
        assert clip.tolist() == video[clip_indices(k, T, tau, n)].tolist()
        assert clip[T // 2] == k  # the key frame is input index T // 2


def test_keyframe_schedule():
    assert keyframe_indices(95, fps=30, per_second=1) == [0, 30, 60, 90]
    assert keyframe_indices(10, fps=29.97, per_second=0.5) == [0]
    assert keyframe_indices(4, fps=10, per_second=100) == [0, 1, 2, 3]  # every frame at most


@pytest.mark.parametrize("fps, per_second", [(1e-9, 1.0), (30.0, 1e300), (30.0, math.inf), (10.0, 10.0)])
def test_keyframe_schedule_of_every_frame_ends(fps, per_second):
    """A key-frame step ≤ 1 frame is every frame; a step near 0 (--fps 1e-9) looped forever on frame 0."""
    found = []
    worker = threading.Thread(target=lambda: found.append(keyframe_indices(5, fps=fps, per_second=per_second)),
                              daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert found == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("fps, per_second", [(math.inf, 1.0), (math.nan, 1.0), (30.0, 0.0), (30.0, "1")])
def test_keyframe_schedule_refuses_bad_rates(fps, per_second):
    with pytest.raises(ConfigError, match="must be a positive number"):
        keyframe_indices(5, fps=fps, per_second=per_second)


@pytest.fixture(scope="module")
def detector():
    cfg = tiny_config()
    return Detector(tiny_model(cfg), cfg, LABELS)


def test_stream_keeps_up_with_a_fast_model(detector):
    frames = synthetic_frames(48)
    report, preds = run_stream(detector, ArraySource(frames, fps=40), every=12)  # budget 300 ms, model ~15 ms
    assert report.frames == 48 and report.predictions == 4 and report.frames_dropped == 0, report.summary()
    assert report.keeps_up and report.summary().startswith("keeps up")
    assert [p.newest_frame for p in preds] == [11, 23, 35, 47]
    after = (8 - 1 - 4) * 2  # (T - 1 - T//2)·τ
    assert [p.keyframe.frame_index for p in preds] == [n - after for n in (11, 23, 35, 47)]
    assert report.latency_median_s >= report.compute_median_s > 0 and report.latency_p95_s >= report.latency_median_s
    assert report.delay_s == pytest.approx(after / 40)


def test_stream_reports_when_it_falls_behind(detector):
    class Slow:
        """The detector, 60 ms slower per prediction (budget: 2 frames at 100 fps = 20 ms)."""

        def __getattr__(self, name):
            return getattr(detector, name)

        def forward(self, clips):
            time.sleep(0.06)
            return detector.forward(clips)

    report, preds = run_stream(Slow(), ArraySource(synthetic_frames(40), fps=100), every=2)
    assert report.frames == 40 and report.frames_dropped > 0 and not report.keeps_up
    assert report.predictions < 20 and "does NOT keep up" in report.summary()
    gaps = np.diff([p.newest_frame for p in preds])
    assert (gaps >= 2).all() and report.frames_dropped == sum(g - 2 for g in gaps) + (preds[0].newest_frame - 1)


def test_stream_report_percentile(detector):
    r = StreamReport(10, 3, 0, 5, 25.0, 0.1, 0.05, 0.09, 0.04, latencies_s=[0.03, 0.05, 0.09])
    d = r.to_dict()
    assert d["keeps_up"] and d["budget_s"] == pytest.approx(0.2) and "latencies_s" not in d
    # nearest-rank p95: the ceil(0.95 n)-th smallest — for n = 20 the second largest, not the maximum
    from bmvit.inference.stream import _percentile

    assert _percentile([float(v) for v in range(20, 0, -1)], 95) == 19.0
    assert _percentile([0.09, 0.03, 0.05], 95) == 0.09 and _percentile([0.09, 0.03, 0.05], 50) == 0.05
    assert math.isnan(_percentile([], 95))
    # a real run: median and p95 of the per-prediction latencies it measured
    report, preds = run_stream(detector, ArraySource(synthetic_frames(40), fps=100), every=2)
    lat = report.latencies_s
    assert len(lat) == report.predictions == len(preds) >= 2 and lat == [p.latency_s for p in preds]
    ranked = sorted(lat)
    assert report.latency_p95_s == ranked[math.ceil(0.95 * len(lat)) - 1]
    assert report.latency_median_s == pytest.approx(float(np.median(lat)), abs=1e-12)
    assert report.compute_median_s == pytest.approx(float(np.median([p.compute_s for p in preds])), abs=1e-12)
    assert ranked[0] <= report.latency_median_s <= report.latency_p95_s <= ranked[-1]


def test_background_writer(tmp_path):
    w = BackgroundVideoWriter(tmp_path / "v.mp4", fps=10)
    for f in synthetic_frames(12, 64, 48):
        w.put(f)
    assert w.close() == tmp_path / "v.mp4" and w.skipped == 0
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12


def test_detect_stream_mode_on_a_file(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "model.safetensors")
    video = write_video(tmp_path / "v.mp4", n=30, fps=30)
    out = tmp_path / "out"
    assert bmvit(["detect", str(video), "--checkpoint", str(ck), "--out", str(out), "--stream", "--every", "10",
                  "--no-progress"]) == 0
    doc = json.loads((out / "detections.json").read_text())
    s = doc["stream"]
    assert s["frames"] == 30 and s["every"] == 10 and s["predictions"] + s["frames_dropped"] // 10 >= 2
    assert {"latency_median_s", "latency_p95_s", "frames_dropped", "keeps_up"} <= set(s)
    assert all("latency_s" in kf and "newest_frame" in kf for kf in doc["keyframes"])
    assert ("keeps up" in capsys.readouterr().out) == s["keeps_up"]
    with av.open(str(out / "annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 30


def test_detect_stream_cut_mid_stream_keeps_its_detections(tmp_path, capsys):
    """A live HTTP stream whose server stops mid-body: the predictions made so far are written
    (``stream.error`` says why it ended) and the run ends with one error line, exit status 2."""
    import http.server
    import threading

    ts = tmp_path / "live.ts"
    with av.open(str(ts), "w", format="mpegts") as c:
        s = c.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in synthetic_frames(90, 64, 48):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    body = ts.read_bytes()

    class Cut(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) * 2 // 3])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Cut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ck = make_checkpoint(tmp_path / "model.safetensors")
    out = tmp_path / "out"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live"
        assert bmvit(["detect", url, "--checkpoint", str(ck), "--out", str(out), "--every", "8", "--no-video",
                      "--no-progress"]) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {url}: ") and "decoding failed after" in err and str(out / "detections.json") in err
    doc = json.loads((out / "detections.json").read_text())
    assert 8 <= doc["stream"]["frames"] < 90 and doc["stream"]["predictions"] == len(doc["keyframes"]) >= 1
    assert "decoding failed after" in doc["stream"]["error"]
    assert (out / "detections.csv").is_file()
