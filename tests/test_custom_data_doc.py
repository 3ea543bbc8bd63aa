"""docs/custom-data.md's worked example, executed: the `bmvit ...` lines of its marked bash block run
in order (through `bmvit.cli.main.main`) on two generated videos with CVAT for video 1.1 exports,
and the import output the page shows must be what the import prints. So the page cannot go stale.

What the test adds to the page's commands, for speed only: a tiny model and 2 steps for `train`,
`--no-progress` everywhere, `--no-video` for `detect`.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from inference_fixtures import synthetic_frames

from bmvit.cli.main import main as bmvit
from bmvit.data.formats.cvat import CvatAttribute, CvatShape, CvatTask, CvatTrack, write_cvat

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "custom-data.md"
MARK = "<!-- worked example: run by tests/test_custom_data_doc.py -->"
FLAGS = {"train": ["--no-progress"], "eval": ["--no-progress"], "detect": ["--no-progress", "--no-video", "--threads", "1"]}
OVERRIDES = {"train": ["data.size=64", "data.num_frames=4", "model.head_hidden=32", "train.max_steps=2",
                       "train.warmup_steps=1", "train.eval_at_minutes=[]", "train.threads=1"]}
W, H, FPS = 160, 120, 10


def doc_blocks() -> tuple[list[list[str]], list[str]]:
    """The commands of the marked bash block and the lines of the ```text block that follows it."""
    text = DOC.read_text()
    assert MARK in text, f"{DOC}: marker {MARK!r} missing"
    after = text.split(MARK, 1)[1]
    bash = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in bash.replace("\\\n", " ").splitlines()
                if line.strip().startswith("bmvit ")]
    shown = re.search(r"```text\n(.*?)```", after, re.S).group(1)
    return commands, [l for l in shown.splitlines() if l.strip()]


def write_mp4(path: Path, seconds: int, seed: int) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in synthetic_frames(seconds * FPS, W, H, seed):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    return path


def cvat_export(path: Path, video: Path, seconds: int) -> Path:
    """What CVAT exports for a task on ``video`` with two people drawn as tracks (key frames every
    second, interpolated between): the red block walks, the blue one waves from second 2 on and
    leaves the picture (outside) for the last second."""
    n = seconds * FPS
    red = [CvatShape(i, (float((5 + 2 * i) % (W - 20)), 10.0, float((5 + 2 * i) % (W - 20) + 14), 50.0),
                     attributes={"walk": "true", "wave": "false"}) for i in range(0, n, FPS)]
    blue = [CvatShape(i, (float(W - 20 - (5 + 2 * i) % (W - 20) // 2), 20.0, float(W - 8 - (5 + 2 * i) % (W - 20) // 2), 55.0),
                      attributes={"walk": "false", "wave": "true" if i >= 2 * FPS else "false"}) for i in range(0, n - FPS, FPS)]
    blue.append(CvatShape(n - FPS, blue[-1].box, outside=True, attributes=blue[-1].attributes))
    labels = {"person": [CvatAttribute(a, "checkbox", "false", ["false"]) for a in ("walk", "wave")]}
    task = CvatTask(video.stem, n, 0, n - 1, 1, W, H, labels, [CvatTrack(0, "person", red), CvatTrack(1, "person", blue)],
                    video.name)
    return write_cvat(path, task)


@pytest.fixture
def example_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kitchen, hallway = write_mp4(Path("videos/kitchen.mp4"), 6, 0), write_mp4(Path("videos/hallway.mp4"), 4, 1)
    cvat_export(Path("cvat/kitchen.xml"), kitchen, 6)
    cvat_export(Path("cvat/hallway.xml"), hallway, 4)
    return tmp_path


def test_worked_example_runs_as_documented(example_dir, capsys):
    torch.set_num_threads(1)
    commands, shown = doc_blocks()
    verbs = [c[1] for c in commands]
    assert verbs == ["prepare", "prepare", "train", "eval", "detect"], verbs
    printed = []
    for cmd in commands:
        rest = [str(REPO / a) if a.startswith("configs/") else a for a in cmd[2:]]
        args = [cmd[1], *FLAGS.get(cmd[1], []), *rest, *OVERRIDES.get(cmd[1], [])]
        rc = bmvit(args)
        out = capsys.readouterr()
        assert rc == 0, f"`{shlex.join(cmd)}` failed: {out.err[-2000:]}"
        printed += out.out.splitlines()
    missing = [l for l in shown if l not in printed]
    assert not missing, "docs/custom-data.md shows output the commands no longer print:\n" + "\n".join(missing)
    assert Path("runs/mine/model.safetensors").is_file()
    assert Path("runs/mine/detect_hallway/cvat_annotations.xml").is_file()
