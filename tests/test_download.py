"""``bmvit.data.prepare.download.fetch`` against misbehaving servers on 127.0.0.1 (tests/ava_server.py's
``custom`` handlers): connections reset mid-body, redirects, Retry-After, odd resume answers."""

import os
import re
import socket
import struct
import time

import pytest
from ava_server import AvaServer

from bmvit.data.prepare.download import DownloadError, fetch

DATA = os.urandom(300_000)


pytestmark = pytest.mark.usefixtures("no_proxy")  # tests/conftest.py: the local servers are reached directly


@pytest.fixture
def server():
    with AvaServer() as s:
        yield s


def _range_start(h) -> int | None:
    m = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range") or "")
    return int(m.group(1)) if m else None


def _reset_after(n: int):
    """Answers Range requests (206) with the right headers but sends at most ``n`` bytes of the body,
    then resets the connection (TCP RST, as a crashed proxy or a NAT time-out does)."""

    def answer(h, data):
        start = _range_start(h) or 0
        h.send_response(206 if start else 200)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        h.wfile.write(data[start:start + n])
        h.wfile.flush()
        if start + n < len(data):
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True

    return answer


def test_reset_every_100k_keeps_what_arrived_and_finishes(tmp_path, server):
    """Bytes received before a reset are kept in the .part (each try makes progress), not lost with
    a half-filled read buffer."""
    server.files["/f"] = DATA
    server.custom["/f"] = _reset_after(100_000)
    dest = tmp_path / "f.bin"
    assert fetch(f"{server.base}/f", dest, retries=2, backoff=0, timeout=5) == len(DATA)
    assert dest.read_bytes() == DATA and not dest.with_name("f.bin.part").exists()
    starts = [_start(r) for _, r in server.requests]  # a reset may drop what was still in the server's buffer
    assert starts[0] == 0 and all(a < b for a, b in zip(starts, starts[1:])) and len(starts) >= 3


def _start(range_header: str | None) -> int:
    return int(range_header[6:-1]) if range_header else 0


def _redirect(to: str, code: int = 302):
    def answer(h, data):
        h.send_response(code)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def test_redirects_followed_and_a_loop_is_one_line(tmp_path, server):
    server.files["/real"] = DATA
    server.custom["/moved"] = _redirect("/real", 301)
    server.custom["/temp"] = _redirect("/moved", 307)
    assert fetch(f"{server.base}/temp", tmp_path / "a", backoff=0) == len(DATA) and (tmp_path / "a").read_bytes() == DATA
    server.custom["/loop"] = _redirect("/loop2")
    server.custom["/loop2"] = _redirect("/loop")
    with pytest.raises(DownloadError) as e:
        fetch(f"{server.base}/loop", tmp_path / "b", backoff=0, hint="check it")
    assert str(e.value) == f"{server.base}/loop: HTTP 302: a redirect loop or too many redirects (check it)"
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.part").exists()


def test_retry_after_is_honoured_and_a_long_one_gives_up_at_once(tmp_path, server):
    times = []

    def busy_once(h, data):
        times.append(time.monotonic())
        if len(times) == 1:
            h.send_response(503)
            h.send_header("Retry-After", "1")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    server.files["/busy"] = DATA
    server.custom["/busy"] = busy_once
    assert fetch(f"{server.base}/busy", tmp_path / "a", backoff=0.01) == len(DATA)
    assert len(times) == 2 and times[1] - times[0] >= 0.9  # not the 0.01 s back-off
    for value in ("100000", "Fri, 31 Dec 2100 23:59:59 GMT"):
        server.custom["/later"] = lambda h, data, v=value: _too_many(h, v)
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match=r"/later: HTTP 429 Too Many Requests, Retry-After \d+ s is more "
                                                r"than the 300 s bmvit waits \(re-run to resume\)"):
            fetch(f"{server.base}/later", tmp_path / "b", backoff=0.01)
        assert time.monotonic() - t0 < 1 and not (tmp_path / "b").exists()


def _too_many(h, retry_after: str) -> None:
    h.send_response(429)
    h.send_header("Retry-After", retry_after)
    h.send_header("Content-Length", "0")
    h.end_headers()


def test_resume_answered_from_byte_0_restarts_the_part(tmp_path, server):
    """A server that answers a resume with 206 ``bytes 0-N/N`` (the whole file) must not be appended
    to the .part, nor refused forever (every re-run would fail the same way)."""

    def whole_as_206(h, data):
        h.send_response(206)
        h.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    server.files["/f"] = DATA
    server.custom["/f"] = whole_as_206
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"x" * 1000)
    assert fetch(f"{server.base}/f", dest, retries=1, backoff=0) == len(DATA) and dest.read_bytes() == DATA
    assert server.requests == [("/f", "bytes=1000-")]


def test_bad_urls_are_one_line_errors(tmp_path, server, capsys):
    from bmvit.cli.main import main

    server.custom["/bad"] = _redirect("http://[::1/x")  # an unparsable Location
    for url in ("notaurl", f"{server.base}/bad"):
        with pytest.raises(DownloadError, match=r"(notaurl|/bad): .*URL"):
            fetch(url, tmp_path / "a", backoff=0)
    for opt, url in (("--annotations-url", "ava_v2.2.zip"), ("--base-url", "s3.amazonaws.com/ava-dataset"),
                     ("--base-url", "http://"), ("--annotations-url", "mailto:x@y"),
                     ("--base-url", "http://[::1/ava")):
        assert main(["prepare", "ava", "--out", str(tmp_path / "o"), opt, url, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: {opt}: expected an http://, https://, ftp:// or file:// URL, got {url!r}\n"
    assert not (tmp_path / "o").exists()
