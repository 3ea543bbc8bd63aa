"""The CVAT for video 1.1 XML format: reading, writing, and a track's box at any frame.

Contract:

* :func:`read_cvat` parses an export of CVAT's "CVAT for video 1.1" format — the ``annotations.xml``
  or the export's zip holding it — (``<annotations>`` →
  ``<meta><task>`` or ``<meta><job>`` → ``<track id label>`` → ``<box frame outside occluded
  keyframe xtl ytl xbr ybr>`` with ``<attribute name>value</attribute>`` children) into a
  :class:`CvatTask`. Frame numbers are kept as written: CVAT writes the frame number *of the
  video* (``start_frame + k · step`` for task frame ``k``), so they need no conversion.
  Shapes other than boxes are counted and left out. The parser is expat with DOCTYPE and entity
  declarations refused (no entity expansion, no external fetches); every error is a
  :class:`~bmvit.errors.DataError` naming ``file:line``.
* :meth:`CvatTrack.at` is CVAT's own rule for a track at a frame: the listed box there; between
  two listed boxes the linear interpolation of their corners (attributes of the earlier one); an
  ``outside="1"`` box hides the track from its frame until the next listed box; after the last
  listed box the track stays where it was up to the task's ``stop_frame``.
* :func:`write_cvat` writes a :class:`CvatTask` in the same layout (coordinates with 2 decimals,
  as CVAT writes them), atomically.
"""

from __future__ import annotations

import bisect
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

from bmvit.atomic import write_text
from bmvit.errors import DataError

__all__ = ["CvatAttribute", "CvatShape", "CvatTrack", "CvatTask", "read_cvat", "write_cvat"]

_TRUE, _FALSE = ("1", "true"), ("0", "false")


@dataclass
class CvatAttribute:
    """An attribute declared for a label in ``<meta>`` (``input_type``: checkbox, select, radio, number, text)."""

    name: str
    input_type: str
    default_value: str = ""
    values: list[str] = field(default_factory=list)
    mutable: bool = True


@dataclass
class CvatShape:
    """One listed box of a track: pixel corners ``(xtl, ytl, xbr, ybr)`` of the video frame ``frame``."""

    frame: int
    box: tuple[float, float, float, float]
    outside: bool = False
    occluded: bool = False
    keyframe: bool = True
    attributes: dict[str, str] = field(default_factory=dict)
    line: int = 0  # line of the <box> in the file (0: not read from a file)


@dataclass
class CvatTrack:
    id: int
    label: str
    shapes: list[CvatShape]  # sorted by frame, one per frame
    source: str = "manual"
    line: int = 0

    _frames: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def at(self, frame: int, stop_frame: int | None = None) -> CvatShape | None:
        """The track at ``frame`` (module docstring), or None where it is absent."""
        if len(self._frames) != len(self.shapes):  # frame numbers of the (sorted) shapes, cached
            self._frames = [s.frame for s in self.shapes]
        i = bisect.bisect_right(self._frames, frame) - 1
        if i < 0 or self.shapes[i].outside:
            return None
        prev = self.shapes[i]
        if prev.frame == frame:
            return prev
        if i + 1 < len(self.shapes):
            nxt = self.shapes[i + 1]
            t = (frame - prev.frame) / (nxt.frame - prev.frame)
            box = tuple(a + t * (b - a) for a, b in zip(prev.box, nxt.box))
            return CvatShape(frame, box, False, prev.occluded, False, dict(prev.attributes), prev.line)  # type: ignore[arg-type]
        if stop_frame is not None and frame > stop_frame:
            return None
        return CvatShape(frame, prev.box, False, prev.occluded, False, dict(prev.attributes), prev.line)


@dataclass
class CvatTask:
    """What one CVAT for video export holds (``width``/``height``: ``<original_size>``, None if absent)."""

    name: str
    size: int | None
    start_frame: int
    stop_frame: int | None
    step: int
    width: int | None
    height: int | None
    labels: dict[str, list[CvatAttribute]]  # declared in <meta>, file order (empty if none declared)
    tracks: list[CvatTrack]
    source: str = ""  # <meta><source>: the video's file name (CVAT adds it for video tasks)
    other_shapes: int = 0  # polygons, points, ... inside tracks: left out
    path: Path | None = None
    tags: int = 0  # top-level <tag frame label> (frame-level labels, CVAT 2.x): left out
    label_types: dict[str, str] = field(default_factory=dict)  # <label><type> where given: rectangle, polygon, any, ...


# --- parsing -----------------------------------------------------------------------------------

class _Node:
    """A generic element (everything outside ``<track>``), with its line number."""

    __slots__ = ("tag", "attrib", "children", "text", "line")

    def __init__(self, tag: str, attrib: dict[str, str], line: int) -> None:
        self.tag, self.attrib, self.line = tag, attrib, line
        self.children: list[_Node] = []
        self.text: list[str] = []

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def value(self, tag: str) -> str | None:
        c = self.find(tag)
        return None if c is None else "".join(c.text).strip()


def _int(text: str | None, path: Path, line: int, what: str, default: int | None = None) -> int | None:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{path}:{line}: {what} must be an integer, got {text!r}") from None


def _float(text: str | None, path: Path, line: int, what: str) -> float:
    if text is None:
        raise DataError(f"{path}:{line}: <box> has no '{what}' attribute (expected xtl, ytl, xbr, ybr)")
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v):
        raise DataError(f"{path}:{line}: '{what}' must be a finite number, got {text!r}")
    return v


def _flag(attrib: dict[str, str], name: str, default: bool, path: Path, line: int) -> bool:
    text = attrib.get(name)
    if text is None:
        return default
    text = text.strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise DataError(f"{path}:{line}: '{name}' must be 0 or 1, got {text!r}")


def _box(attrib: dict[str, str], path: Path, line: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (_float(attrib.get(k), path, line, k) for k in ("xtl", "ytl", "xbr", "ybr"))
    angle = _float(attrib.get("rotation", "0"), path, line, "rotation")
    if angle % 360:  # a rotated box: its axis-aligned hull
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        hw, hh = (w * c + h * s) / 2, (w * s + h * c) / 2
        x1, y1, x2, y2 = cx - hw, cy - hh, cx + hw, cy + hh
    if not (x2 > x1 and y2 > y1):
        raise DataError(f"{path}:{line}: box needs xtl < xbr and ytl < ybr, got "
                        f"xtl={x1:g} ytl={y1:g} xbr={x2:g} ybr={y2:g}")
    return x1, y1, x2, y2


class _Reader:
    """expat handlers: a generic tree outside ``<track>``, CvatShapes built directly inside (so an
    export listing every frame of many tracks costs no tree of its own)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parser = p = expat.ParserCreate()
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartDoctypeDeclHandler = p.EntityDeclHandler = self.refuse
        p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = self.start, self.end, self.chars
        self.stack: list[_Node] = []
        self.root: _Node | None = None
        self.tracks: list[CvatTrack] = []
        self.other = 0  # non-box shapes in tracks
        self.track: CvatTrack | None = None
        self.seen: dict[int, int] = {}  # frame -> line, in the current track
        self.shape: CvatShape | None = None
        self.skip = 0  # depth inside an element of a track that is not read (polygon, ...)
        self.attr: str | None = None
        self.text: list[str] = []

    def refuse(self, *_args) -> None:
        raise DataError(f"{self.path}:{self.parser.CurrentLineNumber}: DOCTYPE/ENTITY declarations are refused "
                        "(a CVAT export has none; remove them)")

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        line = self.parser.CurrentLineNumber
        if self.track is not None:
            if self.skip:
                self.skip += 1
            elif self.shape is None and tag == "box":
                self._box(attrib, line)
            elif self.shape is None:
                self.other, self.skip = self.other + 1, 1
            elif tag == "attribute":
                self.attr, self.text = attrib.get("name", "").strip(), []
            return
        if tag == "track" and len(self.stack) == 1:
            if "label" not in attrib:
                raise DataError(f"{self.path}:{line}: <track> has no 'label' attribute")
            tid = _int(attrib.get("id"), self.path, line, "track 'id'")
            if tid is None:
                raise DataError(f"{self.path}:{line}: <track> has no 'id' attribute")
            self.track, self.seen = CvatTrack(tid, attrib["label"].strip(), [], attrib.get("source", "manual"), line), {}
            return
        node = _Node(tag, attrib, line)
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def _box(self, attrib: dict[str, str], line: int) -> None:
        path, tid = self.path, self.track.id  # type: ignore[union-attr]
        frame = _int(attrib.get("frame"), path, line, "'frame'")
        if frame is None or frame < 0:
            raise DataError(f"{path}:{line}: <box> needs a 'frame' >= 0")
        if frame in self.seen:
            raise DataError(f"{path}:{line}: track {tid} has a second box at frame {frame} (first at line {self.seen[frame]})")
        self.seen[frame] = line
        self.shape = CvatShape(frame, _box(attrib, path, line), _flag(attrib, "outside", False, path, line),
                               _flag(attrib, "occluded", False, path, line), _flag(attrib, "keyframe", True, path, line),
                               {}, line)

    def end(self, tag: str) -> None:
        if self.track is None:
            self.stack.pop()
        elif self.skip:
            self.skip -= 1
        elif self.shape is not None and tag == "attribute" and self.attr is not None:
            self.shape.attributes[self.attr] = "".join(self.text).strip()
            self.attr = None
        elif self.shape is not None and tag == "box":
            self.track.shapes.append(self.shape)
            self.shape = None
        elif tag == "track":
            self.track.shapes.sort(key=lambda s: s.frame)
            self.tracks.append(self.track)
            self.track = None

    def chars(self, data: str) -> None:
        if self.attr is not None:
            self.text.append(data)
        elif self.track is None and self.stack:
            self.stack[-1].text.append(data)

    def read(self) -> _Node:
        try:
            if zipfile.is_zipfile(self.path):
                self._read_zip()
            else:
                with open(self.path, "rb") as f:
                    self.parser.ParseFile(f)
        except FileNotFoundError:
            raise DataError(f"{self.path}: annotation file not found") from None
        except IsADirectoryError:
            raise DataError(f"{self.path}: is a folder, expected the annotations.xml of a CVAT export") from None
        except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as e:  # unreadable, bad zip member
            raise DataError(f"{self.path}: cannot read ({e})") from None
        except expat.ExpatError as e:
            raise DataError(f"{self.path}:{e.lineno}: malformed XML ({expat.ErrorString(e.code)}, column "
                            f"{e.offset + 1}); export the task again as 'CVAT for video 1.1'") from None
        assert self.root is not None  # expat refuses a document without a root element
        return self.root

    def _read_zip(self) -> None:
        """Parse the ``annotations.xml`` of a CVAT export zip (errors then name ``ZIP/annotations.xml``)."""
        with zipfile.ZipFile(self.path) as z:
            names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == "annotations.xml"]
            if len(names) != 1:
                found = "none" if not names else ", ".join(names[:3])
                raise DataError(f"{self.path}: a zip holding one annotations.xml expected (a 'CVAT for video 1.1' "
                                f"export), found {found}")
            self.path = Path(f"{self.path}/{names[0]}")
            with z.open(names[0]) as f:
                self.parser.ParseFile(f)


def _labels(task: _Node) -> dict[str, list[CvatAttribute]]:
    out: dict[str, list[CvatAttribute]] = {}
    node = task.find("labels")
    for label in node.children if node is not None else []:
        if label.tag != "label":
            continue
        attrs = []
        block = label.find("attributes")
        for a in block.children if block is not None else []:
            if a.tag == "attribute" and a.value("name"):
                values = [v.strip() for v in (a.value("values") or "").splitlines() if v.strip()]
                attrs.append(CvatAttribute(a.value("name") or "", (a.value("input_type") or "").lower(),
                                           a.value("default_value") or "", values,
                                           (a.value("mutable") or "true").lower() in ("true", "1")))
        out[label.value("name") or ""] = attrs
    return out


def _label_types(task: _Node) -> dict[str, str]:
    node = task.find("labels")
    labels = [c for c in node.children if c.tag == "label"] if node is not None else []
    return {label.value("name") or "": (label.value("type") or "").lower() for label in labels if label.value("type")}


def _step(text: str | None, path: Path, line: int) -> int:
    if not text:
        return 1
    m = re.fullmatch(r"\s*step\s*=\s*(\d+)\s*", text)
    if m is None or int(m.group(1)) < 1:
        raise DataError(f"{path}:{line}: <frame_filter> {text!r} is not supported (expected empty or 'step=N')")
    return int(m.group(1))


def read_cvat(path: str | Path) -> CvatTask:
    """Parse a CVAT for video 1.1 export (module docstring)."""
    reader = _Reader(Path(path))
    root = reader.read()
    path = reader.path  # in a zip: ZIP/annotations.xml
    if root.tag != "annotations":
        raise DataError(f"{path}:{root.line}: root element is <{root.tag}>, expected <annotations> (a CVAT XML export)")
    image = root.find("image")
    if image is not None:
        raise DataError(f"{path}:{image.line}: this is a 'CVAT for images' export (<image> elements); "
                        "export the task as 'CVAT for video 1.1'")
    meta = root.find("meta")
    task = None if meta is None else (meta.find("task") or meta.find("job"))
    if task is None:
        if meta is not None and meta.find("project") is not None:
            raise DataError(f"{path}:{meta.line}: this is a project export; export each task (one video) "
                            "as 'CVAT for video 1.1'")
        raise DataError(f"{path}: no <meta><task> (or <job>) element; is this a 'CVAT for video 1.1' export?")
    mode = task.value("mode")
    if mode and mode != "interpolation":
        raise DataError(f"{path}:{task.line}: task mode is {mode!r}: an image task; bmvit imports video tasks "
                        "(mode 'interpolation', format 'CVAT for video 1.1')")
    line = task.line
    size = _int(task.value("size"), path, line, "<size>")
    step = _step(task.value("frame_filter"), path, line)
    start = _int(task.value("start_frame"), path, line, "<start_frame>", 0) or 0
    stop = _int(task.value("stop_frame"), path, line, "<stop_frame>")
    if stop is None and size:
        stop = start + (size - 1) * step
    width = height = None
    osize = task.find("original_size")
    if osize is not None:
        width = _int(osize.value("width"), path, osize.line, "<original_size><width>")
        height = _int(osize.value("height"), path, osize.line, "<original_size><height>")
    ids: dict[int, int] = {}
    for t in reader.tracks:
        if t.id in ids:
            raise DataError(f"{path}:{t.line}: a second track with id {t.id} (first at line {ids[t.id]})")
        ids[t.id] = t.line
    return CvatTask(task.value("name") or "", size, start, stop, step, width, height, _labels(task), reader.tracks,
                    meta.value("source") or "", reader.other, path,  # type: ignore[union-attr]
                    sum(c.tag == "tag" for c in root.children), _label_types(task))


# --- writing -----------------------------------------------------------------------------------

def _element(indent: int, tag: str, text: str) -> str:
    return f"{'  ' * indent}<{tag}>{escape(text)}</{tag}>\n"


def write_cvat(path: str | Path, task: CvatTask) -> Path:
    """Write ``task`` as a CVAT for video 1.1 XML file (atomically: temporary file + rename)."""
    path = Path(path)
    out = ['<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n', _element(1, "version", "1.1"),
           "  <meta>\n    <task>\n"]
    out += [_element(3, "name", task.name), _element(3, "size", str(task.size or 0)),
            _element(3, "mode", "interpolation"), _element(3, "overlap", "0"),
            _element(3, "start_frame", str(task.start_frame)),
            _element(3, "stop_frame", str(task.stop_frame if task.stop_frame is not None else 0)),
            _element(3, "frame_filter", f"step={task.step}" if task.step != 1 else "")]
    out.append("      <labels>\n")
    for name, attrs in task.labels.items():
        out += ["        <label>\n", _element(5, "name", name), _element(5, "type", "rectangle"), "          <attributes>\n"]
        for a in attrs:
            out += ["            <attribute>\n", _element(7, "name", a.name), _element(7, "mutable", str(a.mutable)),
                    _element(7, "input_type", a.input_type), _element(7, "default_value", a.default_value),
                    _element(7, "values", "\n".join(a.values)), "            </attribute>\n"]
        out += ["          </attributes>\n", "        </label>\n"]
    out.append("      </labels>\n")
    if task.width and task.height:
        out += ["      <original_size>\n", _element(4, "width", str(task.width)), _element(4, "height", str(task.height)),
                "      </original_size>\n"]
    out.append("    </task>\n")
    if task.source:
        out.append(_element(2, "source", task.source))
    out.append("  </meta>\n")
    for t in task.tracks:
        out.append(f"  <track id={quoteattr(str(t.id))} label={quoteattr(t.label)} source={quoteattr(t.source)}>\n")
        for s in t.shapes:
            x1, y1, x2, y2 = s.box
            out.append(f'    <box frame="{s.frame}" outside="{int(s.outside)}" occluded="{int(s.occluded)}" '
                       f'keyframe="{int(s.keyframe)}" xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" ybr="{y2:.2f}" '
                       'z_order="0">\n')
            for name, value in s.attributes.items():
                out.append(f"      <attribute name={quoteattr(name)}>{escape(value)}</attribute>\n")
            out.append("    </box>\n")
        out.append("  </track>\n")
    out.append("</annotations>\n")
    return write_text(path, "".join(out))
