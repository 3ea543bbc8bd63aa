"""A small AVA "mirror" on 127.0.0.1 for ``bmvit prepare ava`` tests and its transcript script.

:class:`AvaServer` serves, from memory, an annotations zip (members under ``ava_v2.2/``, as in the
release), the train/val file list and the movies (tiny H.264 videos from
:func:`data_fixtures.write_mp4` whose frames encode their number), with the layout of the real
sources: ``/ava_v2.2.zip``, ``/annotations/ava_file_names_trainval_v2.1.txt``,
``/trainval/<file name>``. It answers ``Range: bytes=N-`` with 206, and can misbehave on purpose:

* ``drop_once``: paths whose next GET sends the headers of the whole body but only half of it,
  then closes the connection;
* ``ignore_range``: paths answered 200 with the whole file even to a Range request;
* a path not in ``files`` is a 404;
* ``custom``: {path: function(handler, data)} answering that path instead (``data``: ``files[path]``
  or None), for tests that script a misbehaving server (status sequences, resets, redirects).

Every request is logged in ``requests`` as ``(path, Range header or None)``.
"""

from __future__ import annotations

import io
import re
import threading
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from data_fixtures import frame_image, write_mp4

MOVIE_SECONDS = 3  # each movie: 90 frames at 30 fps, 64x48


class _Handler(BaseHTTPRequestHandler):
    server: "_Http"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        st = self.server.owner
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append((self.path, rng))
            data = st.files.get(self.path)
            drop = self.path in st.drop_once
            st.drop_once.discard(self.path)
            ignore_range = self.path in st.ignore_range
            custom = st.custom.get(self.path)
        if custom is not None:
            custom(self, data)
            return
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    owner: "AvaServer"


class AvaServer:
    """HTTP server on 127.0.0.1 (module docstring); use as a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.ignore_range: set[str] = set()
        self.custom: dict[str, Callable[[BaseHTTPRequestHandler, bytes | None], None]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self.httpd = _Http(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "AvaServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths_requested(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests]


def movie_bytes(tmp: Path, name: str, seconds: int = MOVIE_SECONDS) -> bytes:
    """A movie whose frame f (1-based, 30 fps) shows the number f (data_fixtures.frame_image)."""
    p = write_mp4(tmp / name, [frame_image(f) for f in range(1, 30 * seconds + 1)], fps=30)
    return p.read_bytes()


def annotations_zip(csvs: dict[str, str]) -> bytes:
    """The annotations zip: ``csvs`` {file name: text} plus a label map, under ``ava_v2.2/``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in csvs.items():
            z.writestr(f"ava_v2.2/{name}", text)
        z.writestr("ava_v2.2/ava_action_list_v2.2.pbtxt",
                   'item {\n  name: "stand"\n  id: 1\n}\nitem {\n  name: "sit"\n  id: 2\n}\n')
    return buf.getvalue()


def standard_mirror(server: AvaServer, tmp: Path) -> dict[str, str]:
    """Serve the tests' mirror: train videos vidA (mp4), vidB (mkv), vidC (404: listed, not served);
    val videos vidD (corrupt bytes) and vidE (absent from the file list). Returns {video: file name}."""
    names = {"vidA": "vidA.mp4", "vidB": "vidB.mkv", "vidC": "vidC.mp4", "vidD": "vidD.webm"}
    train = "".join(f"{v},{ts},0.1,0.1,0.5,0.9,1,0\n" for v, ts in
                    [("vidA", 1), ("vidA", 2), ("vidA", 3), ("vidB", 1), ("vidB", 2), ("vidC", 2)])
    val = "vidD,2,0.1,0.1,0.5,0.9,2,0\nvidE,2,0.1,0.1,0.5,0.9,2,0\nvidA,2,0.2,0.1,0.5,0.9,2,1\n"
    server.files["/ava_v2.2.zip"] = annotations_zip({
        "ava_train_v2.2.csv": train, "ava_val_v2.2.csv": val,
        "ava_val_excluded_timestamps_v2.2.csv": "vidD,0003\n"})
    server.files["/annotations/ava_file_names_trainval_v2.1.txt"] = ("\n".join(names.values()) + "\n").encode()
    server.files["/trainval/vidA.mp4"] = movie_bytes(tmp, "vidA.mp4")
    server.files["/trainval/vidB.mkv"] = movie_bytes(tmp, "vidB.mkv")
    server.files["/trainval/vidD.webm"] = b"\x1aE\xdf\xa3 this is not a video " * 64
    return names
