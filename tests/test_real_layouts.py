"""The real datasets' layouts (AVA v2.2, UCF101-24 / JHMDB51-21 ACT pickles) through the CLI verbs
and the dataset builder: what the real files hold that small hand-made fixtures tend not to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_fixtures import write_act

from bmvit.cli.main import main as bmvit

REPO = Path(__file__).resolve().parents[1]
JHMDB = REPO / "configs/paper/jhmdb/mvitv2s_16x256_out8x16_split1.yaml"


def _act_overrides(root: Path) -> list[str]:
    return [f"data.root={root}", "data.annotations=GT.pkl", "data.frames_dir=rgb-images",
            "data.frame_template={video}/{frame:05d}.png", "data.num_frames=4", "data.stride=2", "data.size=32"]


def test_show_writes_act_video_ids_with_a_class_folder(tmp_path, capsys):
    """UCF/JHMDB video ids are '<Class>/<video>': `bmvit show` wrote OUT/<Class>/<video>_<frame>.png
    into a folder it had not made (FileNotFoundError traceback)."""
    root = write_act(tmp_path / "act")
    out = tmp_path / "show"
    assert bmvit(["show", "--config", str(JHMDB), "--out", str(out), "--num", "2", "--split", "train",
                  *_act_overrides(root)]) == 0
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["Jump/v_jump_1_0020.png", "Run/v_run_1_0005.png"]
    assert "Run/v_run_1_0005.png: 1 ground-truth actors" in capsys.readouterr().out
