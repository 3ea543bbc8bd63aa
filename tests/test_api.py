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
