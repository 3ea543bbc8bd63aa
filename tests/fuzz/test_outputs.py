"""Outputs are never half-written, and an unwritable output folder is one clear error.

Every writer goes through a temporary name in the same folder and a rename (bmvit.atomic). Three
ways to fail are tried on each writer: the output folder's parent is a file (works as root too),
a read-only folder (only when not root: root ignores permissions), and a failure at the rename
(a full disk, simulated): the error is one OutputError naming the file, the earlier file is kept
intact, and no temporary file is left behind.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from bmvit.config import Config
from bmvit.data.formats.ava import AvaRows, write_label_map, write_rows
from bmvit.errors import BmvitError, OutputError

ROWS = AvaRows(["v1"], np.array([902]), np.array([[0.1, 0.2, 0.5, 0.9]]), np.array([1]), np.array([0.5]))


def _writers():
    """name -> write(path): one call of each output writer."""
    from bmvit.engine.checkpoint import save_weights
    from bmvit.evaluation.ava_csv_fast import write_rows_exact
    from bmvit.evaluation.report import write_json as write_metrics
    from bmvit.inference.outputs import write_json as write_detections
    from bmvit.inference.render import write_mp4

    frames = [np.full((16, 16, 3), i * 40, np.uint8) for i in range(4)]
    return {
        "model.safetensors": lambda p: save_weights(p, torch.nn.Linear(2, 2), Config(), {"step": 3}),
        "detections.json": lambda p: write_detections(p, {"keyframes": []}),
        "detections.csv": lambda p: write_rows(p, ROWS),
        "detections_exact.csv": lambda p: write_rows_exact(p, ROWS),
        "label_map.pbtxt": lambda p: write_label_map(p, {1: "stand"}),
        "metrics.json": lambda p: write_metrics(p, {"frame_map": 0.5}),
        "annotated.mp4": lambda p: write_mp4(p, frames, fps=10),
    }


WRITERS = list(_writers())


@pytest.mark.parametrize("name", WRITERS)
def test_parent_is_a_file(tmp_path, name):
    (tmp_path / "blocker").write_text("a file, not a folder")
    path = tmp_path / "blocker" / "out" / name
    with pytest.raises(BmvitError) as e:
        _writers()[name](path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", WRITERS)
def test_read_only_folder(tmp_path, name):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions (test_parent_is_a_file covers root)")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(BmvitError) as e:
            _writers()[name](folder / name)
        assert str(folder / name) in str(e.value)
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("name", [n for n in WRITERS if n != "annotated.mp4"])
def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch, name):
    """A write that fails at the end (disk full) leaves the earlier complete file and no temporary."""
    import bmvit.atomic

    path = tmp_path / name
    write = _writers()[name]
    write(path)
    before = path.read_bytes()

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bmvit.atomic.os, "replace", full)
    with pytest.raises(OutputError, match=rf"{name}: cannot write output \(No space left on device\)"):
        write(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", WRITERS)
def test_outputs_get_the_permissions_of_open(tmp_path, monkeypatch, name):
    """Every output is readable as a file made by ``open()`` would be (0o666 less the umask), even where
    the writer creates owner-only files (safetensors: 0o600), so a shared results folder stays readable."""
    import bmvit.atomic

    old = os.umask(0o022)
    try:
        assert bmvit.atomic._file_mode() == 0o644
        assert os.umask(0o022) == 0o022  # read without changing it
    finally:
        os.umask(old)
    monkeypatch.setattr(bmvit.atomic, "FILE_MODE", 0o644)
    path = tmp_path / name
    _writers()[name](path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_cli_unwritable_output_folder(tmp_path, capsys):
    """Through the CLI: bmvit synth into a folder whose parent is a file."""
    from tests.fuzz.test_found_cases import _cli

    (tmp_path / "blocker").write_text("x")
    line = _cli(capsys, ["synth", "--out", tmp_path / "blocker" / "data", "--videos", "1", "--val-videos", "0",
                         "--seconds", "2", "--width", "32", "--height", "32"])
    assert str(tmp_path / "blocker" / "data") in line and "cannot write output" in line


def test_prepare_frames_unwritable(tmp_path, capsys):
    from tests.fuzz.test_found_cases import _cli
    from tests.fuzz.test_fuzz_video import VARIANTS, _encode

    (tmp_path / "videos").mkdir()
    _encode(tmp_path / "videos" / "a.mp4", *VARIANTS[0][1:])
    (tmp_path / "blocker").write_text("x")
    line = _cli(capsys, ["prepare", "frames", "--videos", tmp_path / "videos", "--out", tmp_path / "blocker" / "frames"])
    assert str(tmp_path / "blocker" / "frames") in line and "cannot write output" in line
