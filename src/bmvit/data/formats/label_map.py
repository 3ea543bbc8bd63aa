"""The AVA label map (``.pbtxt``, protobuf text format): ``{action_id: name}``.

Contract: :func:`read_label_map` accepts both layouts AVA ships and what users write like them:

* ``item { name: "..." id: N }`` (``ava_action_list_v2.2_for_activitynet_2019.pbtxt``), and
* ``label { name: "..." label_id: N label_type: PERSON_MOVEMENT }`` (``ava_action_list_v2.2.pbtxt``),

with any spacing, field order, ``#`` comments, single or double quotes (``\\"`` escapes), ``,``/``;``
separators and extra fields (``label_type``, ``display_name``, nested messages) ignored; the name is
``name``, else ``display_name``. The file is tokenized, so quotes, braces or ``#`` inside a name are
part of the name. Any malformed or incomplete entry, or a repeated id, is a
:class:`~bmvit.errors.DataError` naming ``file:line``. :func:`write_label_map` writes the ``item``
layout (names escaped so they read back as written), atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from bmvit.atomic import atomic_output
from bmvit.data.formats.text_file import read_text
from bmvit.errors import DataError

__all__ = ["read_label_map", "write_label_map"]

_TOKEN = re.compile(r"""
    (?P<skip>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<word>[-+]?[A-Za-z0-9_.]+)
  | (?P<punct>[{}<>:;,\[\]])
""", re.X)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}
_CLOSE = {"{": "}", "<": ">"}


def _tokens(text: str, path: Path) -> list[tuple[str, str, int]]:
    """``(kind, text, line)`` of each token (kind: str, word or punct)."""
    out, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            snippet = text[pos:pos + 20].split("\n")[0]
            raise DataError(f"{path}:{line}: cannot read {snippet!r} in label map (an unterminated string?); "
                            'expected entries like item { name: "walk" id: 1 }')
        if m.lastgroup != "skip":
            out.append((m.lastgroup, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), token[1:-1])


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], path: Path) -> None:
        self.tokens, self.path, self.i = tokens, path, 0

    def error(self, expected: str) -> DataError:
        if self.i < len(self.tokens):
            _, text, line = self.tokens[self.i]
            return DataError(f"{self.path}:{line}: unexpected {text!r} in label map; expected {expected}")
        line = self.tokens[-1][2] if self.tokens else 1
        return DataError(f"{self.path}:{line}: label map ends early; expected {expected}")

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def skip(self, close: str) -> None:
        """Pass over a nested message up to its ``close`` (consumed), without recursion."""
        want = [close]
        while want:
            tok = self.peek()
            if tok is None:
                raise self.error(f"'{want[-1]}'")
            self.i += 1
            if tok[0] == "punct" and tok[1] in _CLOSE:
                want.append(_CLOSE[tok[1]])
            elif tok[0] == "punct" and tok[1] == want[-1]:
                want.pop()
            elif tok[0] == "punct" and tok[1] in "}>":
                self.i -= 1
                raise self.error(f"'{want[-1]}'")

    def message(self, close: str) -> dict[str, tuple[str, str]]:
        """Fields up to ``close`` (consumed): ``{field: (kind, text)}`` of scalars (first wins)."""
        fields: dict[str, tuple[str, str]] = {}
        while True:
            tok = self.peek()
            if tok is None:
                raise self.error(f"'{close}'")
            kind, text, _ = tok
            self.i += 1
            if text == close and kind == "punct":
                return fields
            if kind == "punct" and text in ",;":
                continue
            if kind != "word":
                self.i -= 1
                raise self.error(f"a field name or '{close}'")
            nxt = self.peek()
            if nxt is not None and nxt[1] == ":":
                self.i += 1
                nxt = self.peek()
            if nxt is not None and nxt[0] == "punct" and nxt[1] in _CLOSE:
                self.i += 1
                self.skip(_CLOSE[nxt[1]])  # a nested message: not a label-map field
            elif nxt is not None and nxt[0] in ("str", "word"):
                self.i += 1
                fields.setdefault(text, nxt[:2])
            else:
                raise self.error(f"a value for {text!r}")


def read_label_map(path: str | Path) -> dict[int, str]:
    """Parse an AVA label-map ``.pbtxt`` (module docstring) into ``{action_id: name}``, sorted by id."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label map not found")
    parser = _Parser(_tokens(read_text(path, "label map"), path), path)
    out: dict[int, str] = {}
    while parser.peek() is not None:
        kind, text, line = parser.peek()  # type: ignore[misc]
        parser.i += 1
        if kind == "punct" and text in ",;":
            continue
        nxt = parser.peek()
        if kind == "word" and nxt is not None and nxt[1] == ":":
            parser.i += 1
            nxt = parser.peek()
        if kind != "word" or nxt is None or nxt[1] not in _CLOSE:
            parser.i -= 1
            raise parser.error('an entry like item { name: "walk" id: 1 }')
        parser.i += 1
        fields = parser.message(_CLOSE[nxt[1]])
        name = fields.get("name") or fields.get("display_name")
        ident = fields.get("id") or fields.get("label_id")
        if name is None or ident is None or name[0] != "str" or not re.fullmatch(r"[-+]?\d+", ident[1]):
            raise DataError(f"{path}:{line}: label-map item needs both 'name: \"...\"' and 'id: N' "
                            "(or 'label_id: N'), an integer id")
        key = int(ident[1])
        if key in out:
            raise DataError(f"{path}:{line}: duplicate label-map id {key}")
        out[key] = _unquote(name[1])
    if not out:
        raise DataError(f"{path}: no 'item {{ name: ... id: ... }}' entries found in label map")
    return dict(sorted(out.items()))


def write_label_map(path: str | Path, labels: dict[int, str]) -> None:
    """Write ``{id: name}`` as ``item { name: "..." id: N }`` entries (atomically)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for key, name in sorted(labels.items()):
            quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            f.write(f'item {{\n  name: "{quoted}"\n  id: {key}\n}}\n')
