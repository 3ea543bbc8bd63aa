"""`bmvit detect`: outputs (JSON schema, AVA CSV, mp4), equality with the model called directly on
the same clips, the clip arithmetic of the evaluation reader, clear errors, --explain, `bmvit show`."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from inference_fixtures import (LABELS, decode, make_checkpoint, synthetic_frames, tiny_config, tiny_model, write_dataset,
                                write_video)
from PIL import Image

from bmvit.cli.main import main as bmvit
from bmvit.data.transforms import KINETICS_MEAN, KINETICS_STD, ClipTransform, normalize_clips, resize_frames
from bmvit.models.postprocess import postprocess

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", n=40, fps=10)


@pytest.fixture(scope="module")
def detected(ckpt, video, tmp_path_factory):
    out = tmp_path_factory.mktemp("detect")
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--batch", "3",
                  "--no-progress", "--topk", "2"]) == 0
    return out


def _check_schema(doc: dict) -> None:
    """The detections.json schema of docs/inference.md."""
    assert doc["schema_version"] == 1
    assert set(doc) >= {"video", "settings", "labels", "keyframes", "checkpoint", "input"}
    v = doc["video"]
    assert isinstance(v["fps"], float) and v["fps"] > 0 and isinstance(v["width"], int) and isinstance(v["height"], int)
    assert isinstance(v["num_frames"], int) and v["kind"] in ("file", "frames", "stream", "array")
    for key in ("backbone", "num_frames", "stride", "size", "threshold", "nms_iou", "score", "topk", "keyframes_per_second"):
        assert key in doc["settings"]
    assert all(k.isdigit() and isinstance(n, str) for k, n in doc["labels"].items())
    previous = -1
    for kf in doc["keyframes"]:
        assert set(kf) == {"frame_index", "time", "actors"}
        assert isinstance(kf["frame_index"], int) and kf["frame_index"] > previous and kf["time"] >= 0
        previous = kf["frame_index"]
        for a in kf["actors"]:
            assert set(a) == {"box", "box_normalized", "actor_score", "track_id", "token", "actions"}
            x1, y1, x2, y2 = a["box_normalized"]
            assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1
            assert a["box"] == pytest.approx([x1 * v["width"], y1 * v["height"], x2 * v["width"], y2 * v["height"]], abs=0.01)
            assert doc["settings"]["threshold"] < a["actor_score"] <= 1
            assert isinstance(a["track_id"], int) and a["track_id"] >= 0 and isinstance(a["token"], int)
            assert 1 <= len(a["actions"]) <= doc["settings"]["topk"]
            scores = [x["score"] for x in a["actions"]]
            assert scores == sorted(scores, reverse=True)
            assert all(doc["labels"][str(x["id"])] == x["name"] and 0 <= x["score"] <= 1 for x in a["actions"])


def test_detect_writes_json_csv_and_mp4(detected, video):
    doc = json.loads((detected / "detections.json").read_text())
    _check_schema(doc)
    assert doc["video"]["num_frames"] == 40 and (doc["video"]["width"], doc["video"]["height"]) == (80, 60)
    assert [kf["frame_index"] for kf in doc["keyframes"]] == [0, 10, 20, 30]  # one per second at 10 fps
    assert [kf["time"] for kf in doc["keyframes"]] == [0.0, 1.0, 2.0, 3.0]
    assert doc["labels"] == {"1": "class 1", "2": "class 2", "3": "class 3"}  # no label map next to the config
    n = sum(len(kf["actors"]) for kf in doc["keyframes"])
    assert n > 0
    rows = (detected / "detections.csv").read_text().splitlines()
    assert len(rows) == n * 3  # every class of every actor
    assert rows[0].startswith("clip,0000,") and len(rows[0].split(",")) == 8
    with av.open(str(detected / "annotated.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 40 and frames[0].shape == (360, 480, 3)  # 80×60 scaled up to 480 wide


def _views_average(model, clips):
    """Outputs of ``model`` on each clip of ``clips`` (a list of (1, 3, T, S, S)), averaged by hand:
    boxes arithmetically, scores as probabilities (what eval.time_tta promises)."""
    outs = [model(c) for c in clips]
    avg = dict(outs[0])
    avg["boxes"] = torch.stack([o["boxes"] for o in outs]).mean(0)
    for key in ("actor_logits", "action_logits"):
        avg[key] = torch.logit(torch.stack([o[key].sigmoid() for o in outs]).mean(0).clamp(1e-6, 1 - 1e-6))
    return avg


def _check_equals_model(out_dir, video, ckpt, wrap=lambda m: m, views=(0,)) -> None:
    """Decode independently, build every key frame's clip with the reader's arithmetic, run the
    model (``wrap``-ped) clip by clip, post-process: the detections of ``out_dir/detections.json``.
    ``views``: the clips moved by these frame offsets, outputs averaged (eval.time_tta)."""
    from bmvit.engine.checkpoint import load_weights

    state, cfg, _ = load_weights(ckpt)
    model = tiny_model(cfg)
    model.load_state_dict(state)
    model = wrap(model)
    frames = decode(video)  # (H, W, 3) uint8 each
    S, T, tau = cfg.data.size, cfg.data.num_frames, cfg.data.stride
    small = resize_frames(np.stack(frames), (S, S)).numpy()  # (N, S, S, 3): the evaluation reader's resize
    doc = json.loads((out_dir / "detections.json").read_text())
    for kf in doc["keyframes"]:
        k = kf["frame_index"]
        clips = []
        for v in views:
            idx = np.clip(k + v + (np.arange(T) - T // 2) * tau, 0, len(frames) - 1)
            clip = ClipTransform(size=S)(torch.from_numpy(np.stack([small[i] for i in idx])), torch.zeros(0, 4),
                                         torch.zeros(0, 3))[0]
            clips.append(normalize_clips(clip[None], KINETICS_MEAN, KINETICS_STD))
        with torch.no_grad():
            out = model(clips[0]) if len(views) == 1 else _views_average(model, clips)
        d = postprocess(out, cfg.eval.threshold, cfg.eval.nms_iou, cfg.eval.score)[0]
        order = torch.argsort(d.actor_scores, descending=True)
        got = kf["actors"]
        assert [a["token"] for a in got] == d.tokens[order].tolist()
        assert np.allclose([a["box_normalized"] for a in got], d.boxes[order].numpy().reshape(-1, 4), atol=2e-6)
        assert np.allclose([a["actor_score"] for a in got], d.actor_scores[order].numpy(), atol=2e-6)
        for a, scores in zip(got, d.action_scores[order]):
            best = torch.argsort(scores, descending=True)[:2]
            assert [x["id"] for x in a["actions"]] == [list(LABELS)[i] for i in best.tolist()]
            assert np.allclose([x["score"] for x in a["actions"]], scores[best].numpy(), atol=2e-6)


def test_detect_equals_model_on_the_same_clips(detected, video, ckpt):
    _check_equals_model(detected, video, ckpt)


def test_detect_with_flip_tta_equals_the_averaged_model(tmp_path, video, ckpt, detected):
    """``--hflip-tta on``: the checkpoint's model averaged with its mirror image (models/flip_tta.py;
    tiny.yaml swaps action ids 1 and 2 under a flip: columns 0 and 1 here), and not the plain output."""
    from bmvit.models.flip_tta import FlipTTA

    out = tmp_path / "tta"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--batch", "3",
                  "--no-progress", "--topk", "2", "--hflip-tta", "on"]) == 0
    doc = json.loads((out / "detections.json").read_text())
    assert doc["settings"]["hflip_tta"] is True
    _check_equals_model(out, video, ckpt, wrap=lambda m: FlipTTA(m, [(0, 1)]))
    plain = json.loads((detected / "detections.json").read_text())
    assert [a["actor_score"] for kf in doc["keyframes"] for a in kf["actors"]] != \
        [a["actor_score"] for kf in plain["keyframes"] for a in kf["actors"]]


def test_detect_with_time_tta_equals_the_average_of_the_moved_clips(tmp_path, video, ckpt, detected):
    """``--time-tta=-1,2``: every key frame predicted from its clips moved by -1 and +2 frames
    (clamped at the video's ends), outputs averaged — computed here clip by clip without TimeTTA;
    the setting is recorded, and the result differs from the plain model's."""
    out = tmp_path / "ttta"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--batch", "3",
                  "--no-progress", "--topk", "2", "--time-tta=-1,2"]) == 0
    doc = json.loads((out / "detections.json").read_text())
    assert doc["settings"]["time_tta"] == [-1, 2]
    _check_equals_model(out, video, ckpt, views=(-1, 2))
    plain = json.loads((detected / "detections.json").read_text())
    assert [kf["frame_index"] for kf in doc["keyframes"]] == [kf["frame_index"] for kf in plain["keyframes"]]
    assert [a["actor_score"] for kf in doc["keyframes"] for a in kf["actors"]] != \
        [a["actor_score"] for kf in plain["keyframes"] for a in kf["actors"]]


@pytest.mark.parametrize("value", ["1,1", "a,b", "0.5"])
def test_time_tta_option_rejects_bad_offsets(tmp_path, video, ckpt, capsys, value):
    with pytest.raises(SystemExit):
        bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(tmp_path / "x"), f"--time-tta={value}"])
    err = capsys.readouterr().err
    assert "--time-tta" in err and "Traceback" not in err


def test_video_shorter_than_a_clip_is_padded(tmp_path, ckpt):
    short = write_video(tmp_path / "short.mp4", n=5, fps=10)
    out = tmp_path / "out"
    assert bmvit(["detect", str(short), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress",
                  "--fps-keyframes", "5"]) == 0
    doc = json.loads((out / "detections.json").read_text())
    assert [kf["frame_index"] for kf in doc["keyframes"]] == [0, 2, 4]  # j · 10 / 5
    ts = {r.split(",")[1] for r in (out / "detections.csv").read_text().splitlines()}
    assert ts <= {"0000", "0.200", "0.400"}  # fractional seconds with more than one key frame per second
    with av.open(str(out / "annotated.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


@pytest.mark.parametrize("views", [(0,), (-1, 1), (-3, 0, 2)])
def test_clip_arithmetic_matches_the_evaluation_reader(tmp_path, views):
    """Frames folder in the AVA layout: the clip tensors of the detector are those of AvaClips
    (with time TTA: the moved clips one after the other, in both)."""
    from bmvit.data.clips import AvaClips
    from bmvit.inference.detector import Detector
    from bmvit.inference.video_source import open_source
    from bmvit.inference.windows import SlidingClips

    root = write_dataset(tmp_path / "ds")
    cfg = tiny_config(root)
    det = Detector(tiny_model(cfg), cfg, LABELS)
    ds = AvaClips(root / "frames", root / "annotations/val.csv", root / "annotations/label_map.pbtxt",
                  cfg.data.num_frames, cfg.data.stride, ClipTransform(size=cfg.data.size, views=views), fps=10,
                  first_second=900)
    keys = [(kf.timestamp - 900) * 10 for kf in ds.keyframes]  # 0-based key-frame index of each timestamp
    window = SlidingClips(det.num_frames, det.stride, iter(keys), views)
    clips = []
    for frame in open_source(root / "frames" / "vid0"):
        clips += window.push(det.resize(frame))
    clips += window.flush()
    assert [k for k, _ in clips] == keys
    for (_, c), i in zip(clips, range(len(ds))):
        assert ds[i][0].shape[1] == len(views) * cfg.data.num_frames
        assert torch.equal(det.to_tensor(c[None])[0], normalize_clips(ds[i][0][None], KINETICS_MEAN, KINETICS_STD)[0])


@pytest.mark.parametrize("kind", ["garbage", "empty", "no_video_stream", "missing", "empty_folder"])
def test_unreadable_input_gives_one_clear_error(tmp_path, ckpt, capsys, kind):
    path = tmp_path / f"{kind}.mp4"
    if kind == "garbage":
        path.write_bytes(b"\x00\x01 this is not a video " * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no_video_stream":  # a valid mp4 header, no frames (PyAV writes no stream without packets)
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=10)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
            c.start_encoding()
    elif kind == "empty_folder":
        path = tmp_path / "frames"
        path.mkdir()
    assert bmvit(["detect", str(path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0], err
    expected = {"garbage": "cannot open video", "empty": "empty file", "no_video_stream": "no video stream",
                "missing": "not found", "empty_folder": "no frames"}[kind]
    assert expected in err[0]
    assert not (tmp_path / "o" / "detections.json").exists()


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_truncated_video_is_an_error_or_fewer_frames(tmp_path, ckpt, video, capsys, container):
    """A 40-frame file cut in half. An mp4 keeps its index (moov) at the end: the cut file cannot be
    opened -> one clear error. Matroska is streamable: the frames before the cut are decoded -> fewer
    frames, no crash, detections only for frames that exist."""
    src = video if container == "mp4" else write_video(tmp_path / "clip.mkv", n=40, fps=10)
    cut = tmp_path / f"cut.{container}"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    rc = bmvit(["detect", str(cut), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--no-progress", "--no-video"])
    err = capsys.readouterr().err
    if container == "mp4":
        assert rc == 2 and err.startswith("error: ") and str(cut) in err and len(err.strip().splitlines()) == 1
        assert "cannot open video" in err and not (tmp_path / "o" / "detections.json").exists()
    else:
        assert rc == 0, err
        result = json.loads((tmp_path / "o" / "detections.json").read_text())
        n = result["video"]["num_frames"]
        assert 0 < n < 40
        assert result["keyframes"] and all(k["frame_index"] < n for k in result["keyframes"])


def test_explain_writes_fig3_panels(tmp_path, ckpt, video):
    out = tmp_path / "out"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress",
                  "--explain", "--no-video", "--fps-keyframes", "0.5"]) == 0
    pngs = sorted((out / "explain").glob("*.png"))
    assert [p.name for p in pngs] == ["frame_000000.png", "frame_000020.png"]
    im = np.asarray(Image.open(pngs[0]))
    assert im.shape == (240, 640, 3)  # two 320-wide panels of the 80×60 frame scaled up
    assert not (out / "annotated.mp4").exists()


def test_explain_image_highlights_confident_tokens():
    from bmvit.inference.explain import YELLOW, explain_image, pick_slice

    h = w = 4
    probs = np.full(2 * h * w, 0.05)
    probs[h * w + 5] = 0.9  # slice 2, row 1, col 1
    cells = torch.rand(2 * h * w, 4) * 0.2 + 0.3
    img = explain_image(np.zeros((40, 40, 3), np.uint8), {"boxes": cells, "actor_probs": torch.tensor(probs),
                                                           "grid": (4, h, w)}, threshold=0.5, min_width=80)
    assert pick_slice(probs, h * w, 0.5) == 1 and img.shape == (80, 160, 3)
    assert (img[:, :80] == YELLOW).all(-1)[20:40, 20:40].any()  # outlined cell in the heat map
    assert (img[:, 80:] == YELLOW).all(-1).any()  # its box in the right panel


def test_show_renders_gt_next_to_predictions(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds")
    ck = make_checkpoint(tmp_path / "model.safetensors", root=root)
    out = tmp_path / "show"
    assert bmvit(["show", "--checkpoint", str(ck), "--out", str(out), "--num", "1"]) == 0
    (png,) = out.glob("*.png")
    assert png.name == "vid0_0901.png"
    im = np.asarray(Image.open(png))
    assert im.shape == (270, 2 * 360 + 4, 3)  # two panels 360 wide (80×60 scaled) and a 4-px gap
    assert "2 ground-truth actors" in capsys.readouterr().out
    (tmp_path / "file").write_text("")  # --out an existing file: one line, no traceback
    assert bmvit(["show", "--checkpoint", str(ck), "--out", str(tmp_path / "file"), "--num", "1"]) == 2
    assert f"error: {tmp_path / 'file'}: cannot write output" in capsys.readouterr().err


def test_show_with_a_time_tta_override_runs_the_moved_clips(tmp_path, capsys):
    """``eval.time_tta`` given to `bmvit show`: the reader returns the moved clips and the model
    averages them (the detections are those of a Detector built with the same offsets)."""
    import re

    from bmvit.config import apply_overrides
    from bmvit.data.build import make_dataset
    from bmvit.inference.detector import Detector

    root = write_dataset(tmp_path / "ds")
    ck = make_checkpoint(tmp_path / "model.safetensors", root=root)
    out = tmp_path / "show"
    assert bmvit(["show", "--checkpoint", str(ck), "--out", str(out), "--num", "1", "eval.time_tta=[-1,1]"]) == 0
    n = int(re.search(r"(\d+) detections", capsys.readouterr().out).group(1))
    det = Detector.from_checkpoint(ck, time_tta=[-1, 1])
    ds = make_dataset(apply_overrides(det.cfg, ["eval.time_tta=[-1,1]"]), "val")
    clip = ds[0][0]
    assert clip.shape[1] == 2 * det.num_frames
    d = det.detect(det.forward(normalize_clips(clip[None], KINETICS_MEAN, KINETICS_STD)))[0]
    assert n == len(d.tokens)


def test_frames_folder_reads_unpadded_numbers_in_number_order(tmp_path):
    """``ffmpeg -i v.mp4 frame%d.png`` writes frame1, frame2, ..., frame10: frame order is number
    order (frame10 after frame9), not the characters' order (frame10 after frame1)."""
    from bmvit.inference.video_source import open_source

    for i in range(1, 13):
        Image.new("RGB", (8, 6), (i * 20, 0, 0)).save(tmp_path / f"frame{i}.{'png' if i % 2 else 'bmp'}")
    assert [int(f[0, 0, 0]) // 20 for f in open_source(str(tmp_path))] == list(range(1, 13))


def test_video_cut_short_is_detected_with_a_warning(tmp_path, ckpt, capsys):
    """An mp4 with its index first (faststart), cut: the index still promises 6 s, the data stops
    sooner. The frames that decode are detected, and the shortfall is said (a stderr warning naming
    the file, ``video.warning`` in detections.json), never passed off as the whole video."""
    rng = np.random.default_rng(3)
    full = tmp_path / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for _ in range(60):
            c.mux(s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), format="rgb24")))
        c.mux(s.encode())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out = tmp_path / "o"
    assert bmvit(["detect", str(cut), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress", "--no-video"]) == 0
    warn = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and str(cut) in warn[0] and "truncated video" in warn[0] and "6.000 s" in warn[0], warn
    doc = json.loads((out / "detections.json").read_text())
    assert 0 < doc["video"]["num_frames"] < 60 and "truncated video" in doc["video"]["warning"]
    assert bmvit(["detect", str(full), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o2"), "--no-progress", "--no-video"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert "warning" not in json.loads((tmp_path / "o2" / "detections.json").read_text())["video"]


def test_frames_folder_with_gaps_in_its_numbering_is_said(tmp_path, ckpt, capsys):
    """Frames 1-3, 7, 8 (4-6 deleted): read one after the other, the times after the gap would be
    early without a word; detect warns naming the jump (stderr, ``video.warning``)."""
    for i in (1, 2, 3, 7, 8):
        Image.new("RGB", (16, 12), (i * 20, 0, 0)).save(tmp_path / f"cam_{i:06d}.jpg")
    out = tmp_path / "o"
    assert bmvit(["detect", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress", "--no-video"]) == 0
    warn = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warn) == 1 and "cam_000003.jpg" in warn[0] and "cam_000007.jpg" in warn[0], warn
    assert "cam_000007.jpg" in json.loads((out / "detections.json").read_text())["video"]["warning"]
    assert bmvit(["detect", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress", "--no-video",
                  "--stream", "--every", "2"]) == 0  # streaming mode says it too
    assert sum(line.startswith("warning:") and "cam_000007.jpg" in line for line in capsys.readouterr().err.splitlines()) == 1


def test_annotated_video_of_an_extreme_portrait_frame(tmp_path, ckpt):
    """A 16x1200 video: scaled up to 480 wide, the annotated video would be 480x36000 (past what
    H.264 encodes: the run failed after the detections); it is scaled up only while the long side
    stays within 1920."""
    video = tmp_path / "needle.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 16, 1200, "yuv420p"
        for f in synthetic_frames(3, 16, 1200):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    out = tmp_path / "o"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    with av.open(str(out / "annotated.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (1920, 26, 3)  # 1.6x: 1200 -> 1920 (width made even)


def test_anamorphic_video_is_rendered_as_players_show_it(tmp_path, ckpt):
    """A 64x48 video whose pixels are shown twice as wide (SAR 2:1, as DV / HDV / DVD files store
    16:9 pictures) is shown 128x48: the annotated video is drawn at that shape (scaled up to 480
    wide), not squeezed to the stored 4:3; the boxes of the CSV stay normalized to the picture."""
    video = tmp_path / "wide.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for f in synthetic_frames(3, 64, 48):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    from bmvit.inference.video_source import open_source

    assert open_source(str(video)).info.sample_aspect == 2.0
    out = tmp_path / "o"
    assert bmvit(["detect", str(video), "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]) == 0
    with av.open(str(out / "annotated.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (180, 480, 3)  # 128x48 shown, x3.75 to 480 wide


def test_a_run_folder_given_as_checkpoint_names_the_file(tmp_path, ckpt, video, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(ckpt.read_bytes())
    assert bmvit(["detect", str(video), "--checkpoint", str(run), "--out", str(tmp_path / "o")]) == 2
    assert f"error: {run}: is a folder, not a checkpoint file; did you mean {run / 'model.safetensors'}?" \
        in capsys.readouterr().err
