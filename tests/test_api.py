"""The Python API: the README's example runs as written; results are plain data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from inference_fixtures import REPO, make_checkpoint, synthetic_frames, write_video

torch.set_num_threads(1)


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    make_checkpoint(tmp_path / "runs" / "demo" / "model.safetensors")
    write_video(tmp_path / "video.mp4", n=25, fps=10)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), scope)
    doc = scope["doc"]
    assert json.loads(json.dumps(doc)) == doc  # plain JSON-able data
    assert [kf["frame_index"] for kf in doc["keyframes"]] == [0, 10, 20]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == sum(len(kf["actors"]) for kf in doc["keyframes"]) > 0


def test_lazy_import_and_array_input(tmp_path):
    import bmvit
    from bmvit import Detector

    assert Detector is bmvit.Detector and "Detector" in bmvit.__all__
    det = Detector.from_checkpoint(make_checkpoint(tmp_path / "m.safetensors"), topk=1)
    frames = np.stack(synthetic_frames(12))  # (N, H, W, 3) uint8
    res = det.predict(frames, keyframes_per_second=2, fps=6)
    assert [kf.frame_index for kf in res.keyframes] == [0, 3, 6, 9] and res.video.kind == "array"
    assert all(len(a.actions) == 1 and len(a.action_scores) == 3 for kf in res.keyframes for a in kf.actors)
    same = det.predict(list(frames), keyframes_per_second=2, fps=6)
    assert same.to_dict()["keyframes"] == res.to_dict()["keyframes"]


def test_api_errors_are_bmvit_errors(tmp_path):
    from bmvit import Detector
    from bmvit.errors import CheckpointError, DataError

    with pytest.raises(CheckpointError, match="not found"):
        Detector.from_checkpoint(tmp_path / "nope.safetensors")
    det = Detector.from_checkpoint(make_checkpoint(tmp_path / "m.safetensors"))
    with pytest.raises(DataError, match="frames must be"):
        det.predict(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(DataError, match=str(tmp_path / "missing.mp4")):
        det.predict(tmp_path / "missing.mp4")


def test_a_label_map_of_another_size_is_named_in_the_error(tmp_path):
    """--labels / labels= with a label map of the wrong class count: the error did not say which file."""
    from bmvit import Detector
    from bmvit.errors import DataError

    lm = tmp_path / "two.pbtxt"
    lm.write_text('item { name: "a" id: 1 }\nitem { name: "b" id: 2 }\n')
    with pytest.raises(DataError, match=re.escape(f"{lm}: label map has 2 classes")):
        Detector.from_checkpoint(make_checkpoint(tmp_path / "m.safetensors"), labels=lm)


@pytest.fixture(scope="module")
def api_det(tmp_path_factory):
    from bmvit import Detector

    return Detector.from_checkpoint(make_checkpoint(tmp_path_factory.mktemp("api") / "m.safetensors"))


def test_tensors_and_array_like_frames_are_read_as_arrays(api_det):
    frames = np.stack(synthetic_frames(4))  # (N, H, W, 3) uint8
    want = api_det.predict(frames, fps=4).to_dict()["keyframes"]
    assert api_det.predict(torch.from_numpy(frames), fps=4).to_dict()["keyframes"] == want  # was OSError: File name too long


@pytest.mark.parametrize("video, match", [
    (np.zeros((40, 50, 3), np.uint8), r"got \(40, 50, 3\) uint8; one frame\? pass frame\[None\]"),
    (np.zeros((2, 40, 50, 4), np.uint8), r"RGBA\? pass frames\[\.\.\., :3\]"),
    (np.zeros((2, 0, 10, 3), np.uint8), "10×0 pixels"),
    (None, "expected a path, URL, .* got NoneType"),
    ((f for f in synthetic_frames(2)), "got generator"),
])
def test_wrong_frames_get_one_clear_error(api_det, video, match):
    from bmvit.errors import DataError

    with pytest.raises(DataError, match=match):
        api_det.predict(video)


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 2}, r"threshold: expected a number in \[0, 1\], got 2"),
    ({"threshold": float("nan")}, "threshold: expected a number"),
    ({"nms_iou": -0.5}, r"nms_iou: expected a number in \[0, 1\] or None"),
    ({"nms_iou": "0.5x"}, "nms_iou: expected a number"),
    ({"batch_size": 2.5}, "batch_size: expected an integer ≥ 1, got 2.5"),
    ({"topk": None}, "topk: expected an integer"),
    ({"hflip_tta": "off"}, "hflip_tta: expected True or False .* got 'off'"),  # was truthy: flip TTA on
    ({"device": "gpu"}, "device 'gpu': not a device name; expected cpu, cuda or cuda:N"),
    ({"device": None}, "device None: not a device name"),
    ({"labels": ["a", "b", "c"]}, r"labels: expected a dict \{id: name\} or a label-map file, got list"),
    ({"labels": {"a": "x", "b": "y", "c": "z"}}, "labels: keys must be integer class ids"),
])
def test_wrong_detector_arguments_are_config_errors(tmp_path, kwargs, match):
    from bmvit import Detector
    from bmvit.errors import ConfigError

    ckpt = make_checkpoint(tmp_path / "m.safetensors")
    with pytest.raises(ConfigError, match=match):
        Detector.from_checkpoint(ckpt, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"fps": 0}, "fps: expected a positive frame rate or None, got 0"),
    ({"fps": float("inf")}, "fps: expected a positive frame rate"),
    ({"keyframes_per_second": "2"}, "key frames per second must be a positive number, got '2'"),
])
def test_wrong_predict_arguments_are_config_errors(api_det, kwargs, match):
    from bmvit.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        api_det.predict(np.stack(synthetic_frames(2)), **kwargs)


def test_string_threshold_still_reads_as_a_number(tmp_path):
    from bmvit import Detector

    assert Detector.from_checkpoint(make_checkpoint(tmp_path / "m.safetensors"), threshold="0.25").threshold == 0.25


def test_a_pytorch_or_converted_backbone_file_says_what_a_detector_checkpoint_is(tmp_path):
    """A .pyth given as the detector said only 'header too large'; a converted backbone only 'no embedded config'."""
    from safetensors.torch import save_file

    from bmvit import Detector
    from bmvit.errors import CheckpointError

    torch.save({"model_state": {"patch_embed.proj.weight": torch.zeros(2)}}, tmp_path / "k400.pyth")
    with pytest.raises(CheckpointError, match=r"k400.pyth: .*it is a PyTorch \(.pth / .pyth\) or pickle file: .*bmvit convert"):
        Detector.from_checkpoint(tmp_path / "k400.pyth")
    save_file({"patch_embed.weight": torch.zeros(2)}, tmp_path / "b.safetensors", metadata={"format": "bmvit-mvit-backbone"})
    with pytest.raises(CheckpointError, match="b.safetensors: .*a backbone written by `bmvit convert`"):
        Detector.from_checkpoint(tmp_path / "b.safetensors")


def test_iter_keyframes_takes_what_predict_takes(api_det):
    """The documented generator took only a VideoSource: a path or an array was AttributeError: no attribute 'info'."""
    frames = np.stack(synthetic_frames(7))
    got = list(api_det.iter_keyframes(frames))
    want = api_det.predict(frames).keyframes  # the same, plus track ids
    assert [kf.frame_index for kf in got] == [0] and [a.box for a in got[0].actors] == [a.box for a in want[0].actors]
    frames = np.stack(synthetic_frames(25))  # fps as predict takes it: 25 frames at 10 fps, one key frame a second
    assert [(kf.frame_index, kf.time) for kf in api_det.iter_keyframes(frames, fps=10)] == [
        (kf.frame_index, kf.time) for kf in api_det.predict(frames, fps=10).keyframes] == [(0, 0.0), (10, 1.0), (20, 2.0)]


def test_building_blocks_name_the_shape_they_expect(api_det):
    from bmvit.errors import DataError

    with pytest.raises(DataError, match=r"expected a batch of clips \(B, T, H, W, 3\) uint8, got shape \(4, 8, 8, 3\)"):
        api_det.to_tensor(np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"expected a tensor \(B, 3, T, H, W\) .*got \(1, 3, 4, 4\)"):
        api_det.forward(torch.zeros(1, 3, 4, 4))
