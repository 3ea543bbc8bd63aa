"""Resumable HTTP downloads of one file (``bmvit prepare ava``).

Contract: :func:`fetch` gets ``url`` into ``dest`` and returns its size in bytes.

* The bytes go to ``<dest>.part``; only a complete file is renamed to ``dest`` (``os.replace``),
  so a file under its final name was complete when written. Complete means: as many bytes as the
  server announced (``Content-Length``, or the total of ``Content-Range`` for a resumed file).
* A ``.part`` left by a dropped connection or a killed run is continued with an HTTP ``Range``
  request; a server that answers ``200`` instead of ``206`` (or a ``206`` from byte 0) sends the
  whole file again and the ``.part`` restarts from zero.
* Connection errors, short bodies, time-outs, HTTP 408/429/5xx are retried after a back-off of
  ``backoff * 2**k`` seconds (k = 0, 1, ...); ``retries`` counts consecutive failures that brought
  no new byte, so a connection that drops every few megabytes still finishes. Other HTTP errors
  (404, 403, ...) are final at once. A ``Retry-After`` (seconds or a date) on a retried answer
  lengthens that wait; one over :data:`MAX_RETRY_AFTER` seconds is a failure at once (re-run later).
* ``expected_size``: when ``dest`` already exists with exactly this size, nothing is requested.
* Failures raise :class:`DownloadError`, one line: the URL, what happened, and ``hint`` (the way
  out the caller offers). ``stop`` (a ``threading.Event``) makes a running download give up
  between chunks, leaving its ``.part`` for the next run.

Only the standard library is used (``urllib.request``; proxies from the environment apply).
"""

from __future__ import annotations

import email.utils
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from bmvit.errors import BmvitError

__all__ = ["MAX_RETRY_AFTER", "DownloadError", "Stopped", "fetch"]

MAX_RETRY_AFTER = 300.0  # seconds: the longest Retry-After waited for
_CHUNK = 1 << 20
_USER_AGENT = "bmvit-prepare/0.1 (+urllib)"


class DownloadError(BmvitError):
    """A file could not be downloaded (network error, HTTP error, incomplete body)."""


class _Retry(Exception):
    """A failure worth another try (message says why)."""


class Stopped(DownloadError):
    """The download was asked to stop (another one failed under ``--on-error error``)."""


def _total_size(resp, have: int) -> tuple[int | None, bool]:
    """``(total bytes of the file or None, resumed?)`` of a 200/206 response to a request from ``have``."""
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) not in (have, 0):
            raise _Retry(f"unexpected Content-Range {resp.headers.get('Content-Range')!r} for a resume at byte {have}")
        # from byte 0: the whole file again, as with a 200
        return (int(m.group(2)) if m.group(2) != "*" else None), int(m.group(1)) == have > 0
    length = resp.headers.get("Content-Length")
    return (int(length) if length and length.isdigit() else None), False


def _retry_after(headers) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (``120`` or an HTTP date), None without one."""
    value = (headers.get("Retry-After") or "").strip() if headers is not None else ""
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def fetch(url: str, dest: str | Path, *, expected_size: int | None = None, retries: int = 5, backoff: float = 2.0,
          timeout: float = 60.0, hint: str = "re-run to resume", on_bytes: Callable[[int], None] | None = None,
          on_total: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> int:
    """Download ``url`` to ``dest`` (module docstring). ``on_total(n)`` is called once the size is known
    (n = bytes still to come), ``on_bytes(n)`` for every chunk written."""
    dest = Path(dest)
    if expected_size is not None and dest.is_file() and dest.stat().st_size == expected_size:
        return expected_size
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    announced = False
    while True:
        if stop is not None and stop.is_set():
            raise Stopped(f"{url}: stopped (its .part is kept; re-run to resume)")
        have = part.stat().st_size if part.exists() else 0
        before = have
        server_wait = None
        headers = {"User-Agent": _USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                total, resumed = _total_size(resp, have)
                if not resumed:
                    have = 0  # the whole file comes again
                if on_total is not None and not announced and total is not None:
                    on_total(total - have)
                    announced = True
                # read1: what has arrived, at once (read(n) waits for n bytes and loses them on a reset or time-out)
                read = getattr(resp, "read1", resp.read)
                with open(part, "ab" if resumed else "wb") as f:
                    while True:
                        if stop is not None and stop.is_set():
                            raise Stopped(f"{url}: stopped (its .part is kept; re-run to resume)")
                        chunk = read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        have += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
            if total is not None and have != total:
                raise _Retry(f"connection closed after {have} of {total} bytes")
            os.replace(part, dest)
            return have
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # Range past the end: the .part may be complete already
                m = re.match(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") if e.headers else "")
                if m and int(m.group(1)) == have:
                    os.replace(part, dest)
                    return have
                part.unlink(missing_ok=True)
                why = f"HTTP 416 for a resume at byte {have}; restarting the file"
            elif e.code in (408, 429) or e.code >= 500:
                why = f"HTTP {e.code} {e.reason}"
                server_wait = _retry_after(e.headers)
                if server_wait is not None and server_wait > MAX_RETRY_AFTER:
                    raise DownloadError(f"{url}: {why}, Retry-After {server_wait:.0f} s is more than the "
                                        f"{MAX_RETRY_AFTER:.0f} s bmvit waits ({hint})") from None
            elif 300 <= e.code < 400 and "infinite loop" in str(e.reason):  # urllib's text is three lines
                raise DownloadError(f"{url}: HTTP {e.code}: a redirect loop or too many redirects ({hint})") from None
            else:
                raise DownloadError(f"{url}: HTTP {e.code} {' '.join(str(e.reason).split())} ({hint})") from None
        except Stopped:
            raise
        except ValueError as e:  # an unusable URL (given, or in a redirect's Location)
            raise DownloadError(f"{url}: not a usable URL ({e}) ({hint})") from None
        except (_Retry, urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as e:
            why = str(e.reason if isinstance(e, urllib.error.URLError) else e) or type(e).__name__
        except OSError as e:  # local disk errors are not worth a retry
            if isinstance(e.__cause__ or e, (ConnectionError, socket.timeout)):
                why = str(e)
            else:
                raise DownloadError(f"{url} -> {part}: {e.strerror or e}") from None
        now = part.stat().st_size if part.exists() else 0
        failures = 1 if now > before else failures + 1
        if failures > retries:
            raise DownloadError(f"{url}: {why}; gave up after {retries} retries ({hint})")
        wait = max(backoff * 2 ** (failures - 1), server_wait or 0.0)
        if stop is not None:
            if stop.wait(wait):
                raise Stopped(f"{url}: stopped (its .part is kept; re-run to resume)")
        else:
            time.sleep(wait)
