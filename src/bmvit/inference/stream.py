"""Live detection: a ring buffer of frames, one prediction every N frames, honest latency figures.

Two threads. The *capture* thread reads the source (a camera or stream at its own pace; a file,
folder or array paced to its frame rate, to simulate a live source), resizes each frame to
``S × S`` and pushes it, with its arrival time, into a :class:`~bmvit.inference.windows.RingBuffer`
of ``(T-1)·τ + 1`` frames — it never waits for the model. The *predict* thread (the caller's)
waits until the newest frame reaches the next scheduled index (frames ``N-1, 2N-1, ...``), takes
the clip that *ends* at the newest frame — its key frame (input index ``T // 2``) is
``(T-1-T//2)·τ`` frames older, the inherent delay of a centred clip — and runs the detector.

Reported per prediction: *latency* = time from the arrival of the newest frame of the clip to the
detections being ready (waiting + preprocessing + model + post-processing) and *compute* (the
last three). A prediction scheduled at frame ``d`` that starts late, at frame ``n > d``, drops
``n - d`` frames: they arrived while the model was busy and the schedule slipped past them (the
next prediction is scheduled at ``n + N``). The stream *keeps up* when no frame is dropped.
"""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bmvit.errors import BmvitError, ConfigError
from bmvit.inference.detector import Detector, KeyFrameResult
from bmvit.inference.tracking import IoUTracker
from bmvit.inference.video_source import VideoSource
from bmvit.inference.windows import RingBuffer, clip_indices, clip_span


@dataclass
class StreamPrediction:
    index: int  # prediction number, from 0
    newest_frame: int  # index of the newest frame of the clip
    keyframe: KeyFrameResult  # detections, for the clip's key frame
    latency_s: float  # arrival of the newest frame -> detections ready
    compute_s: float  # preprocessing + model + post-processing


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


@dataclass
class StreamReport:
    """Summary of a streaming run (``to_dict`` goes into ``detections.json``)."""

    frames: int  # frames captured
    predictions: int
    frames_dropped: int
    every: int  # N: one prediction every N frames
    fps: float
    delay_s: float  # key frame behind the newest frame of its clip: (T-1-T//2)·τ / fps
    latency_median_s: float
    latency_p95_s: float
    compute_median_s: float
    interrupted: bool = False
    error: str | None = None  # a live source that failed after frames came: the error (what came is kept)
    latencies_s: list[float] = field(default_factory=list, repr=False)

    @property
    def budget_s(self) -> float:
        """Time between two scheduled predictions: ``N / fps``."""
        return self.every / self.fps

    @property
    def keeps_up(self) -> bool:
        return self.frames_dropped == 0 and self.predictions > 0

    def summary(self) -> str:
        ms = lambda s: f"{s * 1e3:.0f} ms"  # noqa: E731
        head = (f"{self.predictions} predictions over {self.frames} frames: latency median {ms(self.latency_median_s)}, "
                f"p95 {ms(self.latency_p95_s)} (model {ms(self.compute_median_s)}), budget {ms(self.budget_s)} "
                f"(every {self.every} frames at {self.fps:g} fps), key frame {ms(self.delay_s)} behind the newest frame")
        if self.predictions == 0:
            return f"no prediction made ({self.frames} frames captured; a prediction needs {self.every})"
        if self.keeps_up:
            return f"keeps up: {head}; 0 frames dropped"
        need = max(self.every + 1, math.ceil(self.compute_median_s * self.fps * 1.25))
        return (f"does NOT keep up: {head}; {self.frames_dropped} of {self.frames} frames dropped "
                f"({100 * self.frames_dropped / max(self.frames, 1):.0f}%) — try --every {need}, "
                f"a smaller model or --device cuda")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("latencies_s")
        return {**d, "budget_s": self.budget_s, "keeps_up": self.keeps_up}


def run_stream(detector: Detector, source: VideoSource, every: int = 8, realtime: bool | None = None,
               max_frames: int | None = None,
               on_frame: Callable[[int, np.ndarray, KeyFrameResult | None], None] | None = None,
               on_prediction: Callable[[StreamPrediction], None] | None = None,
               stop: threading.Event | None = None) -> tuple[StreamReport, list[StreamPrediction]]:
    """Run ``detector`` live over ``source`` (module docstring) until it ends, ``max_frames`` were
    captured, ``stop`` is set or Ctrl-C. A live source (``info.kind == "stream"``) that fails after
    frames came ends there: ``report.error`` says why and the predictions are returned.

    ``realtime`` paces files, folders and arrays to their frame rate (default: on for them; live
    sources are never paced). ``on_frame(i, frame, latest)`` is called in the capture thread with
    every full-resolution frame and the newest detections available at that moment — keep it cheap
    (e.g. hand the frame to a :class:`BackgroundVideoWriter`). ``on_prediction`` is called in the
    caller's thread after each prediction.
    """
    if every < 1:
        raise ConfigError(f"--every must be at least 1, got {every}")
    info = source.info
    T, tau, views = detector.num_frames, detector.stride, detector.views
    before, after = clip_span(T, tau, views)  # after: newest frame - key frame
    ring: RingBuffer[tuple[np.ndarray, float]] = RingBuffer(before + after + 1)
    cond = threading.Condition()
    stop = stop or threading.Event()
    state: dict = {"done": False, "error": None, "latest": None}
    paced = (info.kind != "stream") if realtime is None else (realtime and info.kind != "stream")

    def capture() -> None:
        try:
            t0 = time.perf_counter()
            for i, frame in enumerate(source):
                if stop.is_set() or (max_frames is not None and i >= max_frames):
                    break
                if paced:
                    wait = t0 + i / info.fps - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                arrival = time.perf_counter()
                small = detector.resize(frame)  # (S, S, 3) uint8
                with cond:
                    ring.push((small, arrival))
                    latest = state["latest"]
                    cond.notify_all()
                if on_frame is not None:
                    on_frame(i, frame, latest)
        except BaseException as e:  # surfaced in the caller's thread
            state["error"] = e
        finally:
            source.close()
            with cond:
                state["done"] = True
                cond.notify_all()

    thread = threading.Thread(target=capture, name="bmvit-capture", daemon=True)
    tracker = IoUTracker()
    predictions: list[StreamPrediction] = []
    dropped, due, interrupted = 0, every - 1, False
    thread.start()
    try:
        while True:
            with cond:
                cond.wait_for(lambda due=due: state["done"] or ring.count - 1 >= due)
                newest = ring.count - 1
                if newest < due:  # source ended before the next scheduled prediction
                    break
                idx = clip_indices(newest - after, T, tau, views=views)  # (V·T,), within [0, newest]
                frames = np.stack([ring[int(i)][0] for i in idx])  # (V·T, S, S, 3)
                arrival = ring[newest][1]
            dropped += newest - due
            t_start = time.perf_counter()
            outputs = detector.forward(detector.to_tensor(frames[None]))
            det = detector.detect(outputs)[0]
            key = max(newest - after, 0)
            kf = KeyFrameResult(key, key / info.fps, detector.actors(det, info.width, info.height))
            for a, i in zip(kf.actors, tracker.assign(np.array([a.box_normalized for a in kf.actors]).reshape(-1, 4),
                                                       np.array([a.actor_score for a in kf.actors]))):
                a.track_id = i
            done = time.perf_counter()
            pred = StreamPrediction(len(predictions), newest, kf, done - arrival, done - t_start)
            predictions.append(pred)
            with cond:
                state["latest"] = kf
            if on_prediction is not None:
                on_prediction(pred)
            due = newest + every
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        thread.join()
    error = state["error"] if not isinstance(state["error"], KeyboardInterrupt) else None
    if error is not None and not (info.kind == "stream" and isinstance(error, BmvitError) and ring.count):
        raise error  # a live source's dropped connection instead ends the stream, its detections kept
    lat = [p.latency_s for p in predictions]
    report = StreamReport(
        frames=ring.count, predictions=len(predictions), frames_dropped=dropped, every=every, fps=info.fps,
        delay_s=after / info.fps, latency_median_s=statistics.median(lat) if lat else math.nan,
        latency_p95_s=_percentile(lat, 95),
        compute_median_s=statistics.median([p.compute_s for p in predictions]) if predictions else math.nan,
        interrupted=interrupted, error=None if error is None else str(error), latencies_s=lat,
    )
    return report, predictions


class BackgroundVideoWriter:
    """Encode frames to an mp4 on a worker thread so the capture thread never waits for the encoder.

    ``put(frame)`` hands over an ``(H, W, 3)`` uint8 frame; when ``max_queue`` frames are waiting it
    is not written and counted in ``skipped``. ``close()`` finishes the file (raises what the
    encoder raised)."""

    _END = object()

    def __init__(self, path: str | Path, fps: float, max_queue: int = 256) -> None:
        from bmvit.inference.render import write_mp4

        self.path, self.skipped, self.written = Path(path), 0, 0
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self._ended = False

        def frames():
            while True:
                item = self._q.get()
                if item is self._END:
                    self._ended = True
                    return
                self.written += 1
                yield item

        def work() -> None:
            try:
                write_mp4(self.path, frames(), fps)
            except BaseException as e:
                self._error = e
                while not self._ended and self._q.get() is not self._END:  # drain until close()
                    pass

        self._thread = threading.Thread(target=work, name="bmvit-writer", daemon=True)
        self._thread.start()

    def put(self, frame: np.ndarray) -> None:
        try:
            self._q.put_nowait(frame)
        except queue.Full:
            self.skipped += 1

    def close(self) -> Path | None:
        """Finish the file; returns its path, or None when no frame was written."""
        self._q.put(self._END)
        self._thread.join()
        if self._error is not None:
            if self.written == 0 and isinstance(self._error, BmvitError) and "no frames" in str(self._error):
                return None
            raise self._error
        return self.path
