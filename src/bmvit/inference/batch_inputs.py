"""Which inputs a batch of ``bmvit detect`` takes: files, folders, remote files and ``@list`` files.

Inputs (:func:`expand_inputs`): files, folders, remote files (``https://host/clip.mp4``,
:func:`~bmvit.inference.video_source.is_remote_file`) and ``@list.txt`` files (one path or URL per
line, blank lines and ``#`` comments skipped, relative paths relative to the list's folder).

* A folder that directly holds frame images (``.jpg .jpeg .png .bmp``), no video file and no
  sub-folder of videos is *one* frames-video, as for a single input. Any other folder (one of videos
  with a thumbnail image too, a cover image beside sub-folders of videos)
  is searched recursively (sorted): every file with a video extension (:data:`VIDEO_EXTENSIONS`)
  and every sub-folder that is a frames-video is one input; other files are ignored (their count
  is reported).
* Folders are searched once each (symlink loops), regular files only (a named pipe would block),
  and never the batch's own ``out`` folder (its annotated videos are not inputs).
* A path named explicitly (argument or list line) is always an input, even if it is not a video
  or an empty folder: it then fails like any unreadable video.
* Video ids (the output sub-folder and the CSV's ``video_id``): the file stem (of a URL: its path's
  file name), or the folder name of a frames-video; where two inputs share one, their path relative to the folder they were found
  in (``/`` → ``__``; then ``_<extension>`` appended if still needed). Characters other than letters
  and digits (of any script: ``会议.mp4`` is ``会议``), ``.-_`` become ``_``; an id equal to a merged
  file's name (:data:`RESERVED_IDS`) gets ``_video`` appended.
* Across runs an input is identified by :func:`input_key` (real path; URL without its query) and
  its content by :func:`input_stamp` (size and modification time).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bmvit.errors import ConfigError, DataError
from bmvit.inference.video_source import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, is_remote_file, url_name

__all__ = ["RESERVED_IDS", "VideoInput", "expand_inputs", "input_key", "input_stamp", "is_collection"]

RESERVED_IDS = frozenset({"index.jsonl", "detections.csv"})  # the merged files' names: no video folder may take them


@dataclass(frozen=True)
class VideoInput:
    id: str  # output sub-folder and CSV video_id
    path: str  # as given, or as found in a folder / list



def _has_frames(folder: Path, seen: frozenset[str] | set[str] = frozenset()) -> bool:
    """True for a frames-video: frame images directly in ``folder``, no video file there and no
    videos or frames-videos in its sub-folders (a folder of videos with a thumbnail image in it, or
    a cover image next to sub-folders of videos, is a collection). ``seen``: folders not to enter."""
    kinds, subdirs = set(), []
    with os.scandir(folder) as entries:  # one pass, no stat per frame (a folder of 27,000 frames)
        for entry in entries:
            if entry.is_dir():
                subdirs.append(Path(entry.path))
            elif entry.is_file():
                kinds.add(os.path.splitext(entry.name)[1].lower())
    if not kinds & set(FRAME_EXTENSIONS) or kinds & VIDEO_EXTENSIONS:
        return False
    below = set(seen) | {os.path.realpath(folder)}
    return not any(_walk(p, seen=set(below))[0] for p in subdirs)


def is_collection(arg: str) -> bool:
    """True when ``arg`` names a batch: an ``@list``, or a folder that is not a frames-video
    (:func:`_has_frames`) but has videos or frames folders in or below it (an empty folder stays
    a -- failing -- frames folder)."""
    if arg.startswith("@"):
        return True
    p = Path(arg)
    return p.is_dir() and not _has_frames(p) and bool(_walk(p)[0])


def _walk(folder: Path, skip: frozenset[str] = frozenset(), seen: set[str] | None = None) -> tuple[list[Path], int]:
    """Videos and frames-folders under ``folder`` (sorted, depth first) and the number of other files.
    Folders whose real path is in ``skip`` (the batch's own ``--out``) or in ``seen`` (visited: a
    symlink loop) are not entered; only regular files count (a named pipe would block the reader)."""
    seen = set() if seen is None else seen
    real = os.path.realpath(folder)
    if real in skip or real in seen:
        return [], 0
    seen.add(real)
    found, ignored = [], 0
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            if os.path.realpath(p) in skip or os.path.realpath(p) in seen:
                continue
            if _has_frames(p, seen):
                found.append(p)
                seen.add(os.path.realpath(p))
            else:
                sub, n = _walk(p, skip, seen)
                found += sub
                ignored += n
        elif p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
            found.append(p)
        else:  # a text file, an image next to videos (a thumbnail), a pipe or socket
            ignored += 1
    return found, ignored


def _read_list(arg: str) -> list[str]:
    """The inputs of an ``@list`` file: UTF-8 (a byte-order mark, as Notepad writes, is allowed)."""
    path = Path(arg[1:])
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the input list ({e.strerror or e})") from None
    lines = []
    for n, line in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise DataError(f"{path}:{n}: not UTF-8 text; save the list as UTF-8") from None
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line if Path(line).is_absolute() or "://" in line else str(path.parent / line))
    return out


def _safe(text: str) -> str:
    """``text`` with characters other than letters and digits (of any script), ``.-_`` turned into
    ``_``; a name with none of them (``😀``) is ``input_`` plus a hash of it, distinct per name."""
    text = unicodedata.normalize("NFC", text)  # macOS spells é as e + a combining accent
    return re.sub(r"[^\w.-]", "_", text).strip("._") or f"input_{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def _ids(names: list[Path], rels: list[str], dirs: list[bool]) -> list[str]:
    """Stems (folder names for frames-videos), made unique by the path relative to the folder each
    was found in where they collide. A URL comes as its path's file name and ``host/path`` rel."""
    ids = [_safe(p.name if d else p.stem) for p, d in zip(names, dirs)]
    counts = Counter(ids)
    for i, (p, d) in enumerate(zip(names, dirs)):
        if counts[ids[i]] > 1:
            r = Path(rels[i])
            ids[i] = _safe(str(r if d else r.with_suffix("")).strip("/").replace("/", "__"))
    counts = Counter(ids)
    for i, (p, d) in enumerate(zip(names, dirs)):
        if counts[ids[i]] > 1 and p.suffix and not d:
            ids[i] = f"{ids[i]}_{_safe(p.suffix[1:])}"
    ids = [f"{i}_video" if i.lower() in RESERVED_IDS else i for i in ids]  # index.jsonl.mp4 -> index.jsonl_video
    dup = [k for k, n in Counter(ids).items() if n > 1]
    if dup:
        raise ConfigError(f"inputs: two inputs map to the output folder '{dup[0]}'; rename one or run them separately")
    return ids


def expand_inputs(args: Sequence[str], log: Callable[[str], None] | None = None,
                  out: Path | None = None) -> list[VideoInput]:
    """The inputs named by ``args`` (module docstring), each path once (first occurrence kept);
    the batch's own output folder ``out`` is never searched (its annotated videos are no inputs).

    Raises :class:`DataError` when nothing is left."""
    skip = frozenset({os.path.realpath(out)}) if out is not None else frozenset()
    # (input as passed on, file name, path relative to the folder it was found in, is a frames folder)
    found: list[tuple[str, Path, str, bool]] = []
    ignored = 0

    def add(arg: str, from_list: bool) -> None:
        nonlocal ignored
        if arg.startswith("@") and not from_list:
            for line in _read_list(arg):
                add(line, True)
            return
        if arg.startswith("file://"):
            arg = arg[len("file://"):]
        if is_remote_file(arg):
            found.append((arg, Path(url_name(arg)), arg.split("://", 1)[1].split("?", 1)[0], False))
            return
        if "://" in arg:
            raise ConfigError(f"{arg}: a live stream (or a URL without a video file extension) cannot be part of "
                              f"a batch; run one `bmvit detect` per stream")
        p = Path(arg)
        inside: list[Path] = []
        if p.is_dir() and not _has_frames(p):
            inside, n = _walk(p, skip)
            found.extend((str(f), f, str(f.relative_to(p)), f.is_dir()) for f in inside)
            ignored += n
        if not inside:  # named explicitly: always an input, even an empty folder (module docstring)
            if not (p.is_dir() and os.path.realpath(p) in skip):
                found.append((str(p), p, arg, p.is_dir()))

    for a in args:
        add(str(a), False)
    seen, unique = set(), []
    for entry in found:
        key = input_key(entry[0])
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    if not unique:
        raise DataError(f"{' '.join(args)}: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) and no frames folders found")
    if ignored and log is not None:
        log(f"{ignored} file(s) without a video extension ignored in the input folders")
    ids = _ids([e[1] for e in unique], [e[2] for e in unique], [e[3] for e in unique])
    return [VideoInput(i, e[0]) for i, e in zip(ids, unique)]


def input_key(path: str) -> str:
    """What identifies an input across runs: a remote file's URL without its query (signed URLs
    change their signature), a local path's real path (whatever the working directory)."""
    return path.split("?", 1)[0].split("#", 1)[0] if is_remote_file(path) else os.path.realpath(path)


def input_stamp(path: str) -> list[int] | None:
    """Size and modification time of a local input (None for remote ones): a file replaced at the
    same path since a video was done makes it redone."""
    if is_remote_file(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]
