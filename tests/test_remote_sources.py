"""Video sources over the network (``bmvit.inference.video_source``): a server that accepts the
connection and never answers is a one-line time-out error, not a hang or FFmpeg's jargon."""

import socket
import threading
import time

import pytest

from bmvit.errors import DataError
from bmvit.inference import video_source
from bmvit.inference.video_source import open_source


def test_a_server_that_never_answers_times_out_in_words(monkeypatch):
    monkeypatch.setattr(video_source, "NETWORK_TIMEOUT_S", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(2)], daemon=True).start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        for url, what in ((f"{base}/clip.mp4", "video"), (f"{base}/live", "stream")):
            t0 = time.monotonic()
            with pytest.raises(DataError) as e:
                open_source(url)
            assert time.monotonic() - t0 < 5
            assert str(e.value) == f"{url}: cannot open {what} (nothing received for 1 s: time-out)"
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()
