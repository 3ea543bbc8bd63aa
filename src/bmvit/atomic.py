"""Atomic output files: written under a temporary name in the same folder, then renamed.

Contract: :func:`atomic_output` yields a temporary path ``.<name>.<pid>.<random>.tmp`` next to
``path`` (same folder, hence same file system). When the ``with`` block ends normally the
temporary file is renamed over ``path`` with :func:`os.replace`, so a reader sees the old file or
the complete new one, never a half-written one; when the block raises, the temporary file is
removed and ``path`` is left as it was. Any :class:`OSError` on the way (creating the folder,
writing, renaming: no permission, a file where a folder should be, disk full) becomes one
:class:`~bmvit.errors.OutputError` naming ``path`` and the reason.

The renamed file gets the permissions of a file created with ``open()`` (``0o666`` less the
process umask, read once at import), whatever the writer used: some (safetensors, ``mkstemp``)
create owner-only files, which other users of a shared results folder could not read.

:func:`write_text` and :func:`write_bytes` are the one-call forms; :func:`make_folder` creates an
output folder with the same one-line error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bmvit.errors import OutputError

__all__ = ["atomic_output", "make_folder", "output_error", "write_bytes", "write_text"]


def _file_mode() -> int:
    """The permission bits ``open()`` gives a new file in this process (``0o666`` less the umask)."""
    try:  # Linux: read it without changing it (no window in which another thread sees another umask)
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)  # elsewhere: set, then restore at once
        os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def output_error(path: str | os.PathLike[str], e: OSError) -> OutputError:
    """The one-line error for an output that cannot be written."""
    reason = e.strerror or str(e) or type(e).__name__
    return OutputError(f"{path}: cannot write output ({reason}); choose a writable output folder "
                       "with free space")


def make_folder(path: str | os.PathLike[str]) -> Path:
    """Create the output folder ``path`` (and its parents); :class:`OutputError` if it cannot be (a
    file in the way, no permission)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None
    return path


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success (module docstring)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, e) from None
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        raise output_error(path, e) from None
    finally:
        try:
            tmp.unlink()  # only still there after a failure
        except OSError:
            pass


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
