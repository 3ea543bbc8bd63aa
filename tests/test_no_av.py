"""The training engine and model builders import without PyAV (the GPU image has none); a video read
then says what is missing."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HIDE_AV = """
import sys
class _HideAv:
    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            raise ImportError("PyAV hidden by the test")
sys.meta_path.insert(0, _HideAv())
for m in [m for m in sys.modules if m == "av" or m.startswith("av.")]:
    del sys.modules[m]
"""


def test_engine_and_models_import_without_av(tmp_path):
    code = HIDE_AV + """
import bmvit.engine.train, bmvit.models.build, bmvit.data.build, bmvit.data.sources.video
assert "av" not in sys.modules
from bmvit.data.sources.video import VideoFrames
from bmvit.errors import DataError
(__import__("pathlib").Path(sys.argv[1]) / "v.mp4").write_bytes(b"not a video")
try:
    VideoFrames(sys.argv[1]).num_frames("v")
except DataError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env={"PYTHONPATH": str(ROOT / "src")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "needs PyAV (pip install av)" in r.stdout
