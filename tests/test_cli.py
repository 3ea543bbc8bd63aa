"""The CLI turns user errors into one line naming the file/line/key (exit status 2)."""

import subprocess
import sys

import pytest


def _bmvit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bmvit", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _one_error_line(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_unknown_config_key():
    _one_error_line(_bmvit("train", "train.bogus=1"), "unknown key 'train.bogus'")


def test_missing_frames_folder(tmp_path):
    _one_error_line(_bmvit("train", f"data.root={tmp_path}"), str(tmp_path / "frames"), "frames folder not found")


def test_malformed_csv_row(tmp_path, small_synth):
    import shutil

    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    (root / "frames").symlink_to(small_synth / "frames")
    shutil.copy(small_synth / "annotations" / "label_map.pbtxt", root / "annotations")
    lines = (small_synth / "annotations" / "train.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",", ";", 3)
    (root / "annotations" / "train.csv").write_text("\n".join(lines) + "\n")
    _one_error_line(_bmvit("train", f"data.root={root}"), "train.csv:3:", "expected 7 or 8")


def test_print_config():
    r = _bmvit("train", "--print-config", "train.lr=0.5")
    assert r.returncode == 0 and "lr: 0.5" in r.stdout


def test_overrides_after_an_option_still_count(capsys):
    """`bmvit train --config C a=1 --resume auto b=2`: b=2 is an override too; a stray word is not."""
    from bmvit.cli.main import main

    assert main(["train", "train.lr=0.5", "--print-config", "train.seed=7", "train.lr=0.25"]) == 0
    out = capsys.readouterr().out
    assert "  lr: 0.25\n" in out and "  seed: 7\n" in out  # in command-line order: the last value wins
    with pytest.raises(SystemExit):
        main(["train", "train.lr=0.5", "--print-config", "bogus"])
    assert "unrecognized arguments: bogus" in capsys.readouterr().err


def test_resume_and_overwrite_exclude_each_other(capsys):
    """Continue a run or discard it: `--resume auto --overwrite` is refused in one line, not one silently ignored."""
    from bmvit.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", "auto", "--overwrite", "--print-config"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite: not allowed with argument --resume" in err[0]
