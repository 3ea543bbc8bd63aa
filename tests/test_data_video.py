"""Video-file reader (PyAV): same clips as the frames-folder reader, frame-rate grid, truncation."""

import numpy as np
import pytest
import torch
from data_fixtures import (
    AVA_LABEL_MAP,
    decode_frame_numbers,
    frame_image,
    write_mp4,
)

from bmvit.config import load_config
from bmvit.data.clips import KeyFrameClips
from bmvit.data.sources.frame_folder import FrameFolder
from bmvit.data.keyframes import KeyFrameTable
from bmvit.data.prepare.frames import Recipe, prepare_frames
from bmvit.data.transforms import ClipTransform
from bmvit.data.sources.video import VideoFrames
from bmvit.data.build import make_dataset
from bmvit.errors import DataError
from bmvit.inference.video_source import open_source

N = 75  # frames of the 30 fps video: 2.5 s, key frames at 900, 901, 902 s


@pytest.fixture(scope="module")
def ava_video(tmp_path_factory):
    """``videos/vidA.mp4`` (30 fps), ``videos/vid25.mp4`` (25 fps), AVA CSV, frames from `prepare`."""
    root = tmp_path_factory.mktemp("avavid")
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 60, (48, 64, 3)).astype(np.int16)
    frames = [np.clip(frame_image(f) + texture, 0, 255).astype(np.uint8) for f in range(1, N + 1)]
    write_mp4(root / "videos" / "vidA.mp4", frames, fps=30)
    write_mp4(root / "videos" / "vid25.mp4", [frame_image(f) for f in range(1, 51)], fps=25)  # 2 s
    (root / "annotations").mkdir()
    rows = ["vidA,0900,0.1,0.2,0.4,0.9,1,0", "vidA,0901,0.1,0.2,0.4,0.9,3,0", "vidA,0901,0.5,0.1,0.9,0.8,7,1",
            "vidA,0902,0.2,0.2,0.6,0.9,1,0", "vid25,0901,0.3,0.3,0.7,0.7,3,0"]
    (root / "annotations" / "train.csv").write_text("\n".join(rows) + "\n")
    (root / "annotations" / "val.csv").write_text("\n".join(rows) + "\n")
    (root / "annotations" / "label_map.pbtxt").write_text(AVA_LABEL_MAP)
    prepare_frames(root / "videos", root / "frames", Recipe(ext="jpg", quality=95), log=lambda *_: None)
    prepare_frames(root / "videos", root / "frames_png", Recipe(ext="png"), log=lambda *_: None)
    return root


def _cfg(root, **kw):
    over = [f"data.root={root}", "data.num_frames=8", "data.stride=4", "data.size=32"] + [f"{k}={v}" for k, v in kw.items()]
    return load_config(None, over)


def test_video_reader_equals_png_frames_exactly(ava_video):
    t = ClipTransform(size=32)
    table = make_dataset(_cfg(ava_video, **{"data.source": "video"}), "train").keyframes
    labels = {1: "stand", 3: "talk", 7: "wave"}
    from_video = KeyFrameClips(table, labels, VideoFrames(ava_video / "videos"), 8, 4, t)
    from_png = KeyFrameClips(table, labels, FrameFolder(ava_video / "frames_png", "{video}/{video}_{frame:06d}.png"),
                             8, 4, t)
    assert len(from_video) == 4
    for i in range(len(from_video)):
        (cv, tv), (cp, tp) = from_video[i], from_png[i]
        assert torch.equal(cv, cp)
        assert torch.equal(tv["boxes"], tp["boxes"]) and tv["orig_size"] == tp["orig_size"] == (48, 64)


def test_video_reader_matches_jpeg_frames_reader(ava_video):
    """The AVA frames reader on `prepare`'s JPEGs and the video reader give the same clips (JPEG error aside)."""
    frames_ds = make_dataset(_cfg(ava_video), "train")
    video_ds = make_dataset(_cfg(ava_video, **{"data.source": "video"}), "train")
    assert [(k.video_id, k.timestamp) for k in frames_ds.keyframes] == [(k.video_id, k.timestamp) for k in video_ds.keyframes]
    for i in range(len(frames_ds)):
        (cf, tf), (cv, tv) = frames_ds[i], video_ds[i]
        assert (cf.float() - cv.float()).abs().mean() < 2  # uint8 clips: < 2 grey levels on average
        assert torch.equal(tf["labels"], tv["labels"]) and torch.allclose(tf["boxes"], tv["boxes"])
        key = video_ds.key_frame(tv["timestamp"])
        want = np.clip(key + (np.arange(8) - 4) * 4, 1, video_ds.num_video_frames(tv["video_id"]))
        assert list(frames_ds.frame_indices(tf["video_id"], tf["timestamp"])) == list(want)


def test_frame_rate_grid_and_counts(ava_video):
    vf = VideoFrames(ava_video / "videos", fps=30)
    assert vf.num_frames("vidA") == N and vf.num_frames("vid25") == 60  # 2 s at 30 fps
    idx = np.arange(1, 61)
    got = decode_frame_numbers(vf.read("vid25", idx, lambda im: im))
    # frame i of the 30 fps grid is the 25 fps picture on screen at (i - 1) / 30 s
    assert list(got) == [int(np.floor((i - 1) * 25 / 30)) + 1 for i in idx]
    # offset: frame 1 = 1 s into the file
    late = VideoFrames(ava_video / "videos", fps=30, offset=1.0)
    assert late.num_frames("vidA") == N - 30
    assert list(decode_frame_numbers(late.read("vid25", np.array([1, 2]), lambda im: im))) == [26, 26]
    # decoding the same frames twice, from different seek points, gives the same pixels
    a = vf.read("vidA", np.array([70, 71, 3]), lambda im: im)
    b = np.concatenate([vf.read("vidA", np.array([70, 71]), lambda im: im), vf.read("vidA", np.array([3]), lambda im: im)])
    assert np.array_equal(a, b)


def test_truncated_and_missing_video(tmp_path, ava_video):
    rng = np.random.default_rng(1)  # noisy frames: the media data, not the index, makes up the file
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(60)]
    p = write_mp4(tmp_path / "v" / "cut.mp4", frames, faststart=True)  # index first: the metadata survives the cut
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * 0.6)])
    vf = VideoFrames(tmp_path / "v")
    assert vf.num_frames("cut") == 60  # what the metadata promises
    vf.read("cut", np.array([1, 5]), lambda im: im)  # the start is intact
    with pytest.raises(DataError, match=r"cut\.mp4: truncated video"):
        vf.read("cut", np.array([55, 59]), lambda im: im)
    with pytest.raises(DataError, match=r"video 'nope' not found"):
        vf.num_frames("nope")
    (tmp_path / "v" / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(DataError, match=r"junk\.mp4: cannot open video") as junk:
        vf.num_frames("junk")
    assert "cut short" not in str(junk.value)  # not an MP4 at all: no guess about an index
    q = write_mp4(tmp_path / "v" / "head.mp4", frames)  # the index (moov) at the end, as most recorders write it
    q.write_bytes(q.read_bytes()[: q.stat().st_size // 2])  # cut before it: nothing can be opened
    with pytest.raises(DataError, match=r"head\.mp4: cannot open video \(.*; the file ends before its header or index: cut short, or still being written\?\)$"):
        vf.num_frames("head")
    with pytest.raises(DataError, match=r"head\.mp4: cannot open video \(.*cut short"):
        open_source(q)  # bmvit detect's reader says the same


def test_csv_video_absent_on_disk(tmp_path, ava_video):
    root = tmp_path / "r"
    (root / "annotations").mkdir(parents=True)
    (root / "videos").symlink_to(ava_video / "videos")
    (root / "annotations" / "label_map.pbtxt").write_text(AVA_LABEL_MAP)
    (root / "annotations" / "train.csv").write_text("vidA,0901,0.1,0.2,0.4,0.9,1,0\nghost,0901,0.1,0.2,0.4,0.9,1,0\n")
    with pytest.raises(DataError, match=r"train\.csv:2: video 'ghost' is listed but absent on disk"):
        make_dataset(_cfg(root, **{"data.source": "video"}), "train")
    ds = make_dataset(_cfg(root, **{"data.source": "video", "data.on_error": "skip"}), "train")
    assert [k.video_id for k in ds.keyframes] == ["vidA"]


def test_keyframe_table_round_trip():
    from bmvit.data.keyframes import KeyFrame

    kfs = [KeyFrame("b", 3, np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), np.array([[1, 0]], np.float32)),
           KeyFrame("a", 1, np.zeros((0, 4), np.float32), np.zeros((0, 2), np.float32))]
    t = KeyFrameTable.from_keyframes(kfs, 2)
    assert len(t) == 2 and [k.video_id for k in t] == ["b", "a"]
    np.testing.assert_array_equal(t[0].boxes, kfs[0].boxes)
    assert t[1].boxes.shape == (0, 4) and t[-1].timestamp == 1


def test_cover_art_stream_is_not_the_video(tmp_path):
    """A file whose first video stream is a one-frame cover picture (MJPEG, as taggers and downloaders
    store thumbnails): readers take the main track, as players do."""
    import av

    from bmvit.inference.video_source import open_source

    path = tmp_path / "v" / "covered.mkv"
    path.parent.mkdir()
    frames = [frame_image(f) for f in range(1, 31)]  # (48, 64, 3)
    with av.open(str(path), "w") as c:
        cover = c.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        main = c.add_stream("libx264", rate=30)
        main.width, main.height, main.pix_fmt = 64, 48, "yuv420p"
        c.mux(cover.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        c.mux(cover.encode(None))
        for f in frames:
            c.mux(main.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(main.encode(None))
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "mjpeg"  # the trap is really there
    decoded = list(open_source(str(path)))
    assert len(decoded) == 30 and decoded[0].shape == (48, 64, 3)
    vf = VideoFrames(tmp_path / "v")
    assert vf.frame_size("covered") == (48, 64)  # (H, W)
    assert vf.num_frames("covered") == 30
    clip = vf.read("covered", np.array([1, 15, 30]), lambda im: im)
    assert np.asarray(clip).shape[-3:] == (48, 64, 3)


def test_rendering_a_split_read_from_video_files(ava_video, tmp_path):
    """``bmvit eval/train --render`` over ``data.source=video``: every frame of the video, at its
    own size and frame rate, with the ground-truth boxes of the nearest key frame drawn."""
    import av

    from bmvit.data.formats.ava import AvaRows
    from bmvit.inference.render_split import render_split_video, videos_to_render

    ds = make_dataset(_cfg(ava_video, **{"data.source": "video"}), "val")
    assert videos_to_render(ds, 5) == ["vidA", "vid25"]  # most annotated actors first
    none = AvaRows([], np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))
    for vid, frames, fps in (("vidA", N, 30), ("vid25", 60, 30)):  # vid25 (2 s at 25 fps) on the 30-fps grid
        path = render_split_video(ds, none, vid, tmp_path / f"{vid}.mp4")
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            assert float(s.average_rate) == fps
        assert len(got) == frames and got[0].shape[:2] == (max(48, 480 * 48 // 64), 480)  # drawn at 480 px wide


def test_upper_case_extension_is_found(tmp_path, ava_video):
    """Cameras write ``GOPR0001.MP4``: the reader finds a video whose extension differs in case,
    as ``bmvit prepare frames`` and ``bmvit detect`` do, and reads the same frames."""
    (tmp_path / "CAM1.MP4").symlink_to(ava_video / "videos" / "vidA.mp4")
    (tmp_path / "cam2.Mkv").write_bytes(b"")
    vf, ref = VideoFrames(tmp_path), VideoFrames(ava_video / "videos")
    assert vf.has_video("CAM1") and vf.has_video("cam2") and not vf.has_video("cam1")
    assert vf.num_frames("CAM1") == ref.num_frames("vidA") == N
    idx = np.array([1, 40, 75])
    assert np.array_equal(vf.read("CAM1", idx, lambda im: im), ref.read("vidA", idx, lambda im: im))
    (tmp_path / "Run").mkdir()  # ids with a folder (ACT: Class/video), as UCF101's v_*.AVI files
    (tmp_path / "Run" / "v_run_1.AVI").symlink_to(ava_video / "videos" / "vidA.mp4")
    assert vf.has_video("Run/v_run_1") and vf.num_frames("Run/v_run_1") == N


def _mkv_with_longer_audio(path, frames, fps=10, audio_s=2.0):
    """A Matroska file whose audio track lasts longer than its video (common in web and phone
    videos): the container's duration is the audio's, the video track's is in its DURATION tag."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for im in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(im, format="rgb24")))
        c.mux(v.encode())
        for k in range(int(audio_s * 16000) // 1024 + 1):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts = 16000, k * 1024
            c.mux(a.encode(f))
        c.mux(a.encode())
    return path


def test_audio_longer_than_the_video_is_not_truncation(tmp_path):
    """The video track's own end counts: a 1 s video with 2 s of audio has 10 frames at 10 fps
    (not 'truncated video: data ends at 1.000 s, the metadata says 2.0 s'), in the reader and in
    ``prepare frames``; a file cut short is still reported as truncated."""
    rng = np.random.default_rng(2)  # noise: the video data, not the header, makes up the file
    frames = [np.clip(frame_image(f) + rng.integers(0, 40, (48, 64, 3)), 0, 255).astype(np.uint8) for f in range(1, 11)]
    p = _mkv_with_longer_audio(tmp_path / "v" / "talk.mkv", frames)
    vf = VideoFrames(tmp_path / "v", fps=10)
    assert vf.num_frames("talk") == 10
    import av

    with av.open(str(p)) as c:
        want = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (10, H, W, 3)
    assert np.array_equal(vf.read("talk", np.arange(1, 11), lambda im: im), want)
    reports = prepare_frames(tmp_path / "v", tmp_path / "f", Recipe(fps=10), log=lambda *_: None)
    assert [(r.status, r.frames) for r in reports] == [("written", 10)]
    data = p.read_bytes()
    (tmp_path / "v" / "talk.mkv").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=r"talk\.mkv: truncated video"):
        VideoFrames(tmp_path / "v", fps=10).read("talk", np.array([9, 10]), lambda im: im)


def test_mp4_whose_duration_is_shorter_than_its_frames(tmp_path, ava_video):
    """An mp4 whose track header (mdhd) says 1/3 of what its 75 frames last (a broken muxer): the
    metadata contradicts itself, so the end is found by decoding — all frames are read, not the
    first 0.8 s silently."""
    import struct

    data = bytearray((ava_video / "videos" / "vidA.mp4").read_bytes())
    i = data.find(b"mdhd")
    assert data[i + 4] == 0  # version 0: 32-bit duration at +20
    (dur,) = struct.unpack(">I", data[i + 20:i + 24])
    data[i + 20:i + 24] = struct.pack(">I", dur // 3)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "vidA.mp4").write_bytes(bytes(data))
    vf, ref = VideoFrames(tmp_path / "v"), VideoFrames(ava_video / "videos")
    assert vf.num_frames("vidA") == N
    assert np.array_equal(vf.read("vidA", np.array([N - 1, N]), lambda im: im), ref.read("vidA", np.array([N - 1, N]), lambda im: im))
    reports = prepare_frames(tmp_path / "v", tmp_path / "f", Recipe(), log=lambda *_: None)
    assert [(r.status, r.frames) for r in reports] == [("written", N)]


def test_an_end_without_metadata_is_found_from_the_tail(tmp_path, monkeypatch):
    """A video whose metadata gives no end for its track (a WebM with audio and no per-track DURATION
    tag) is not decoded whole to count its frames when the dataset is built: decoding starts a few
    seconds before the container's end (one GOP plus the tail), and finds the same end and count."""
    import av

    import bmvit.data.sources.video as video_mod
    import bmvit.data.sources.video_end as video_end

    path = tmp_path / "v" / "long.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as c:  # 60 s at 5 fps, a key frame every 25 frames
        s = c.add_stream("libx264", rate=5, options={"g": "25"})
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for f in range(300):
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.full((24, 32, 3), f % 256, np.uint8), format="rgb24")))
        c.mux(s.encode(None))
    full = VideoFrames(tmp_path / "v", fps=5).info("long")
    monkeypatch.setattr(video_mod, "stream_end", lambda container, stream: None)  # no usable metadata
    decoded = []
    frames = video_mod._Stream.frames

    def counting(self):
        for frame in frames(self):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(video_mod._Stream, "frames", counting)
    assert VideoFrames(tmp_path / "v", fps=5).info("long") == full == (300, (24, 32), full[2])
    assert full[2] == 60 and len(decoded) <= (video_end.TAIL_S + 5) * 5 + 25  # the tail, not 300 frames
    monkeypatch.setattr(video_end, "TAIL_S", 1000)  # a container shorter than the tail: decoded whole
    decoded.clear()
    assert VideoFrames(tmp_path / "v", fps=5).info("long") == full and len(decoded) == 300
