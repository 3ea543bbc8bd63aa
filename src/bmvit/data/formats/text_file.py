"""User text files (CSVs, label maps) read as UTF-8, every failure named by ``file:line``.

Contract: :func:`read_text` returns the text of ``path`` decoded as UTF-8 (a leading byte-order
mark is dropped; ``\\r\\n`` line ends are kept for :mod:`csv`, which handles them). A file that
is missing, unreadable or not UTF-8 text raises :class:`~bmvit.errors.DataError` naming the file
(and the line of the first undecodable byte). :func:`csv_rows` yields ``(line, fields)`` of a CSV
file the same way; a row :mod:`csv` cannot split (e.g. an over-long field) is a ``file:line`` error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from bmvit.errors import DataError

__all__ = ["csv_rows", "read_text"]


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (module docstring); ``what`` names the kind of file in errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: {what} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                        f"{e.start}); save it as UTF-8 CSV/text") from None


def csv_rows(path: str | Path, what: str = "CSV file") -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of each CSV record of ``path`` (module docstring)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(read_text(path, what), newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: not a readable CSV row ({e})") from None
        yield reader.line_num, row
