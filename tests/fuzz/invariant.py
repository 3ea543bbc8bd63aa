"""The one invariant of the fuzz suite, and the mutation strategies that feed it.

Invariant: a call on (possibly malformed) input either returns — and the caller checks the
result — or raises :class:`~bmvit.errors.BmvitError` whose one-line message names the file (and
the line or key where there is one). Through the CLI: exit status 0, or 2 with exactly one
``error:`` line naming the file / option and no traceback. Anything else fails the test.

Mutations work on bytes (truncate, flip, insert, delete, duplicate, BOM, CRLF, re-encode, empty,
garbage) and on CSV tables (drop / duplicate / reorder rows and columns, inject NaN, inf, huge,
negative, empty and non-ASCII values, blank lines, a header).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from hypothesis import strategies as st

from bmvit.errors import BmvitError

SPECIAL_VALUES = ["nan", "NaN", "inf", "-inf", "1e309", "-1", "-0", "0", "1", "1.5", "99999999999999999999999",
                  "9" * 5000, "", " ", "0x10", "1e-320", "☃", "\"", "1_0", "+2", " 3 ", "none", "\x00", "1,2"]


def expect_ok_or_named_error(call: Callable[[], Any], names: list[str]) -> tuple[Any, BmvitError | None]:
    """``(result, None)`` or ``(None, error)`` for a BmvitError naming one of ``names`` on one line."""
    try:
        return call(), None
    except BmvitError as e:
        msg = str(e)
        assert msg and "\n" not in msg, f"error message is not one line: {msg!r}"
        assert any(str(n) in msg for n in names), f"error message names none of {names}: {msg!r}"
        return None, e


def run_cli(argv: list[str], names: list[str]) -> tuple[int, str, str]:
    """Run ``bmvit argv`` in-process; check the CLI side of the invariant; ``(rc, stdout, stderr)``."""
    from bmvit.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    text = err.getvalue()
    assert "Traceback" not in text, text
    assert rc in (0, 2), f"exit status {rc}; stderr: {text}"
    if rc == 2:
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"expected one 'error:' line, got: {text!r}"
        assert any(str(n) in errors[0] for n in names), f"error line names none of {names}: {errors[0]!r}"
    return rc, out.getvalue(), text


# --- byte-level mutations -----------------------------------------------------------------------

@st.composite
def mutated_bytes(draw, valid: bytes, max_ops: int = 3) -> bytes:
    """``valid`` after 1..max_ops random byte-level edits."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate", "bom", "crlf",
                                   "latin1", "utf16", "empty", "garbage", "zero"]))
        n = len(data)
        if op == "truncate" and n:
            del data[draw(st.integers(0, n - 1)):]
        elif op == "flip" and n:
            i = draw(st.integers(0, n - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 64))]
        elif op == "duplicate" and n:
            i = draw(st.integers(0, n - 1))
            data[i:i] = data[i:i + draw(st.integers(1, 256))]
        elif op == "bom":
            data[0:0] = b"\xef\xbb\xbf"
        elif op == "crlf":
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
        elif op == "latin1":
            data = bytearray(bytes(data).decode("utf-8", "replace").encode("latin-1", "replace") + b"caf\xe9")
        elif op == "utf16":
            data = bytearray(bytes(data).decode("utf-8", "replace").encode("utf-16"))
        elif op == "empty":
            data = bytearray()
        elif op == "garbage":
            data = bytearray(draw(st.binary(max_size=512)))
        elif op == "zero" and n:
            i = draw(st.integers(0, n - 1))
            data[i:i + draw(st.integers(1, 512))] = bytes(min(512, n - i))
    return bytes(data)


# --- table-level mutations (CSV) ----------------------------------------------------------------

@st.composite
def mutated_table(draw, rows: list[list[str]], max_ops: int = 3) -> list[list[str]]:
    """``rows`` after 1..max_ops row/column edits and value injections."""
    rows = [list(r) for r in rows]
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["drop_row", "dup_row", "swap_rows", "drop_col", "dup_col", "swap_cols",
                                   "value", "value", "value", "blank", "header", "text"]))
        if not rows:
            rows = [[]]
        r = draw(st.integers(0, len(rows) - 1))
        width = len(rows[r])
        if op == "drop_row":
            del rows[r]
        elif op == "dup_row":
            rows.insert(r, list(rows[r]))
        elif op == "swap_rows":
            s = draw(st.integers(0, len(rows) - 1))
            rows[r], rows[s] = rows[s], rows[r]
        elif op in ("drop_col", "dup_col", "swap_cols") and width:
            c = draw(st.integers(0, width - 1))
            d = draw(st.integers(0, width - 1))
            for row in rows:
                if c < len(row) and d < len(row):
                    if op == "drop_col":
                        del row[c]
                    elif op == "dup_col":
                        row.insert(c, row[c])
                    else:
                        row[c], row[d] = row[d], row[c]
        elif op == "value" and width:
            c = draw(st.integers(0, width - 1))
            rows[r][c] = draw(st.sampled_from(SPECIAL_VALUES) | st.text(max_size=8))
        elif op == "blank":
            rows.insert(r, [])
        elif op == "header":
            rows.insert(0, ["video_id", "timestamp", "x1", "y1", "x2", "y2", "action_id", "person_id"][:max(width, 1)])
        elif op == "text" and width:
            c = draw(st.integers(0, width - 1))
            rows[r][c] = draw(st.text(max_size=12))
    return rows


def table_bytes(rows: list[list[str]], crlf: bool = False, bom: bool = False) -> bytes:
    text = ("\r\n" if crlf else "\n").join(",".join(r) for r in rows) + "\n"
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")


@st.composite
def mutated_csv(draw, rows: list[list[str]]) -> bytes:
    """A CSV file from a mutated table, sometimes with CRLF / a BOM / byte-level damage on top."""
    table = draw(mutated_table(rows))
    data = table_bytes(table, crlf=draw(st.booleans()), bom=draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        data = draw(mutated_bytes(data, max_ops=2))
    return data
