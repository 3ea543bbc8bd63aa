"""Video sources over the network (``bmvit.inference.video_source``): a server that accepts the
connection and never answers is a one-line time-out error, not a hang or FFmpeg's jargon."""

import socket
import threading
import time

import pytest

from inference_fixtures import make_checkpoint

from bmvit.cli.main import main as bmvit
from bmvit.errors import DataError
from bmvit.inference.video_source import NETWORK_TIMEOUT_S, open_source


def test_a_server_that_never_answers_times_out_in_words():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(3)], daemon=True).start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    rtsp = f"rtsp://127.0.0.1:{listener.getsockname()[1]}/cam"  # FFmpeg reports this wait as "invalid data"
    try:
        for url, what in ((f"{base}/clip.mp4", "video"), (f"{base}/live", "stream"), (rtsp, "stream")):
            t0 = time.monotonic()
            with pytest.raises(DataError) as e:
                open_source(url, timeout=1.0)
            assert time.monotonic() - t0 < 5
            assert str(e.value) == f"{url}: cannot open {what} (nothing received for 1 s: time-out)"
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()


def test_detect_timeout_option(tmp_path, capsys):
    """``bmvit detect --timeout S`` sets how long a silent server may take (default 20 s)."""
    assert NETWORK_TIMEOUT_S == 20.0
    ckpt = make_checkpoint(tmp_path / "model.safetensors")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/live"
    try:
        t0 = time.monotonic()
        rc = bmvit(["detect", url, "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--timeout", "1.5",
                    "--no-progress"])
        assert rc == 2 and time.monotonic() - t0 < 10
        err = capsys.readouterr().err
        assert f"error: {url}: cannot open stream (nothing received for 1.5 s: time-out)" in err
        with pytest.raises(SystemExit) as e:  # argparse: must be > 0
            bmvit(["detect", url, "--checkpoint", str(ckpt), "--timeout", "0"])
        assert e.value.code == 2 and "argument --timeout: 0 is outside the valid range" in capsys.readouterr().err
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()
