"""Fast reader for AVA CSVs (ground truth and detections), and the column-wise rows it returns.

Contract: :func:`read_rows_fast` returns ``CodedAvaRows.from_rows(read_rows(path))`` — the rows
of :func:`bmvit.data.formats.ava.read_rows`, with video ids as integer codes into a vocabulary in
order of first appearance — an order of magnitude faster on large files. It parses with
pyarrow's multi-threaded C++ CSV reader (typed columns, video ids dictionary-encoded, so no
Python string is made per row). Anything that reader does not take as plainly formatted — a
row with another column count, a value that is not a number of the column's type (``902.0``
timestamps, empty fields, ...), a non-finite number, a file it cannot read — goes to ``read_rows``, which owns the
format: it accepts what it accepts and raises the ``file:line``
:class:`~bmvit.errors.DataError` for malformed rows.

:func:`write_rows_exact` writes rows so that reading them back gives the same doubles (shortest
round-trip representation of every float), so a detection CSV scores exactly what the in-memory
rows scored.

Where both readers accept a value they agree: numbers are parsed to the correctly rounded
double (Python's ``float`` and pyarrow both are exact), surrounding spaces are ignored by both,
and video ids are stripped as ``read_rows`` does (here on the vocabulary).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmvit.data.formats.ava import AvaRows, read_rows

__all__ = ["CodedAvaRows", "read_rows_fast", "write_rows_exact"]


@dataclass
class CodedAvaRows:
    """Rows of an AVA CSV, column-wise, with video ids coded (``person_or_score``: person id or score)."""

    videos: list[str]  # (V,) distinct video ids
    video: np.ndarray  # (R,) int64 index into ``videos``
    timestamps: np.ndarray  # (R,) int64
    boxes: np.ndarray  # (R, 4) float64 normalized x1, y1, x2, y2
    actions: np.ndarray  # (R,) int64
    person_or_score: np.ndarray  # (R,) float64: person id (ground truth) or score (detections)

    def __len__(self) -> int:
        return len(self.video)

    def video_id(self, i: int) -> str:
        return self.videos[int(self.video[i])]

    def select(self, mask: np.ndarray) -> "CodedAvaRows":
        return CodedAvaRows(self.videos, self.video[mask], self.timestamps[mask], self.boxes[mask],
                            self.actions[mask], self.person_or_score[mask])

    @classmethod
    def from_rows(cls, rows: "AvaRows | CodedAvaRows") -> "CodedAvaRows":
        """Coded form of :class:`~bmvit.data.formats.ava.AvaRows` (vocabulary in order of appearance)."""
        if isinstance(rows, CodedAvaRows):
            return rows
        vocab = {v: i for i, v in enumerate(dict.fromkeys(rows.video_ids))}
        codes = np.fromiter(map(vocab.__getitem__, rows.video_ids), np.int64, len(rows.video_ids))
        return cls(list(vocab), codes, np.asarray(rows.timestamps, np.int64), np.asarray(rows.boxes, np.float64),
                   np.asarray(rows.actions, np.int64), np.asarray(rows.person_or_score, np.float64))

    def to_rows(self) -> AvaRows:
        vocab = self.videos
        return AvaRows([vocab[i] for i in self.video.tolist()], self.timestamps, self.boxes, self.actions, self.person_or_score)


def _column_count(path: Path) -> int:
    """Comma-separated fields on the first line (0 for an empty file)."""
    with open(path, "rb") as f:
        first = f.readline()
    return first.count(b",") + 1 if first.strip() else 0


def _pyarrow_rows(path: Path) -> CodedAvaRows | None:
    """Parse with pyarrow; ``None`` when the file needs the careful reader."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ncol = _column_count(path)
    if ncol not in (7, 8):
        return None
    names = [f"c{i}" for i in range(ncol)]
    types = {"c0": pa.dictionary(pa.int32(), pa.string()), "c1": pa.int64(), "c6": pa.int64()}
    types.update({f"c{i}": pa.float64() for i in (2, 3, 4, 5, 7)[: ncol - 3]})
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter=",", newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=[], strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, UnicodeDecodeError):
        return None
    if table.num_rows == 0 or any(col.null_count for col in table.columns):
        return None
    # Video ids: one dictionary per chunk -> one vocabulary (stripped, as read_rows strips them).
    vocab: dict[str, int] = {}
    codes = []
    for chunk in table.column("c0").chunks:
        local = np.array([vocab.setdefault(v.strip(), len(vocab)) for v in chunk.dictionary.to_pylist()], np.int64)
        codes.append(local[chunk.indices.to_numpy(zero_copy_only=False)])
    boxes = np.empty((table.num_rows, 4), np.float64)  # (R, 4)
    for j in range(4):
        boxes[:, j] = table.column(f"c{j + 2}").to_numpy()
    extra = table.column("c7").to_numpy().astype(np.float64) if ncol == 8 else np.ones(table.num_rows)
    if not (np.isfinite(boxes).all() and np.isfinite(extra).all()):
        return None  # read_rows names the row
    return CodedAvaRows(list(vocab), np.concatenate(codes), table.column("c1").to_numpy().astype(np.int64), boxes,
                        table.column("c6").to_numpy().astype(np.int64), extra)


def read_rows_fast(path: str | Path) -> CodedAvaRows:
    """Same rows as ``read_rows(path)``, coded (module docstring)."""
    path = Path(path)
    if path.is_file():
        rows = _pyarrow_rows(path)
        if rows is not None:
            return rows
    return CodedAvaRows.from_rows(read_rows(path))


def write_rows_exact(path: str | Path, rows: "AvaRows | CodedAvaRows") -> Path:
    """Write rows as an AVA CSV (no header) with every float in its shortest round-trip form.

    Written atomically (a temporary name in the same folder, then renamed). Video ids must not
    contain commas, quotes or line breaks (they are written unquoted).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from bmvit.atomic import atomic_output

    path = Path(path)
    coded = CodedAvaRows.from_rows(rows)
    vocab = pa.array(coded.videos, pa.string())
    table = pa.table({
        "video": pa.DictionaryArray.from_arrays(pa.array(coded.video.astype(np.int32)), vocab).cast(pa.string()),
        "timestamp": pa.array(coded.timestamps, pa.int64()),
        **{name: pa.array(coded.boxes[:, j], pa.float64()) for j, name in enumerate(("x1", "y1", "x2", "y2"))},
        "action": pa.array(coded.actions, pa.int64()),
        "person_or_score": pa.array(coded.person_or_score, pa.float64()),
    })
    with atomic_output(path) as tmp:  # an unwritable folder: one OutputError naming path
        pacsv.write_csv(table, str(tmp), write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return path
