"""Fuzz: the UCF101-24 / JHMDB evaluation CSVs (class list, GT boxes / tubes, detections, detected
tubes) through ``bmvit eval-frame`` and ``bmvit eval-video`` (tests/fuzz/invariant.py).
"""

from __future__ import annotations

from hypothesis import strategies as st

from tests.fuzz.invariant import mutated_bytes, mutated_csv, run_cli

CLASSES = "Jump\nRun\n"
GT = [["v1", str(f), "Run", "1", "10", "10", "40", "60"] for f in range(1, 6)] + \
     [["v2", str(f), "Jump", "7", "5", "5", "30", "30"] for f in range(2, 5)]
DET = [["v1", str(f), "Run", "0.9", "11", "9", "41", "58"] for f in range(1, 6)] + \
      [["v2", "3", "Run", "0.4", "5", "5", "30", "30"], ["v2", "3", "Jump", "0.7", "6", "5", "31", "30"]]
TUBES = [["v1", str(f), "Run", "1", "0.8", "11", "9", "41", "58"] for f in range(1, 6)]


def _text(rows) -> str:
    return "\n".join(",".join(r) for r in rows) + "\n"


def test_fuzz_eval_frame_and_video_cli(fuzz, tmp_path):
    paths = {"classes": tmp_path / "classes.txt", "gt": tmp_path / "gt.csv", "pred": tmp_path / "det.csv",
             "tubes": tmp_path / "tubes.csv"}

    def check(args):
        verb, which, data = args
        paths["classes"].write_text(CLASSES)
        for name, rows in (("gt", GT), ("pred", DET), ("tubes", TUBES)):
            paths[name].write_text(_text(rows))
        paths[which].write_bytes(data)
        if verb == "eval-frame":
            argv = ["eval-frame", "--classes", paths["classes"], "--gt", paths["gt"], "--pred", paths["pred"]]
        else:
            argv = ["eval-video", "--classes", paths["classes"], "--gt", paths["gt"], "--pred-tubes", paths["tubes"],
                    "--min-tube-length", "1"]
        # a class dropped from the class list is reported where it is used: "<gt.csv>:<line>: unknown class
        # 'X' (not in the class list)"
        names = [paths[which]] + (["(not in the class list)"] if which == "classes" else [])
        rc, out, _ = run_cli(argv, names)
        if rc == 0:
            assert "mAP" in out

    strategy = st.one_of(
        st.tuples(st.sampled_from(["eval-frame", "eval-video"]), st.just("classes"), mutated_bytes(CLASSES.encode())),
        st.tuples(st.sampled_from(["eval-frame", "eval-video"]), st.just("gt"), mutated_csv(GT)),
        st.tuples(st.just("eval-frame"), st.just("pred"), mutated_csv(DET)),
        st.tuples(st.just("eval-video"), st.just("tubes"), mutated_csv(TUBES)))
    fuzz.run(strategy, check, "eval-frame / eval-video CSVs (CLI)", 50)
