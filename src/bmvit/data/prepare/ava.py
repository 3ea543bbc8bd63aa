"""AVA v2.2 from nothing to the layout of ``configs/paper/ava/*.yaml`` (``bmvit prepare ava``).

Contract: :func:`prepare_ava` fills ``out`` (``data.root``) with

* ``annotations/``: every file of the annotations zip (paths inside the zip dropped), so
  ``annotations/ava_train_v2.2.csv``, ``ava_val_v2.2.csv``, ``ava_action_list_v2.2.pbtxt`` and
  ``ava_val_excluded_timestamps_v2.2.csv`` are where the paper configs look; plus the train/val
  file list ``ava_file_names_trainval_v2.1.txt``;
* ``frames/<vid>/<vid>_%06d.jpg`` for every video of the selected splits (the videos the split
  CSVs name), with the pinned recipe of :mod:`bmvit.data.prepare.frames` (default seconds
  ``[900, 1800)``, so frame 1 is second 900: ``data.first_second=900``) — or, with
  ``frames=False``, ``videos/<vid>.mp4`` cut on the same grid (:mod:`bmvit.data.prepare.cut_video`;
  ``data.source=video data.video_offset=0``);
* ``downloads/``: the zip, and each movie while it is processed (deleted once its frames or cut
  are complete, unless ``keep_videos``);
* ``prepare_ava_state.json``: what is complete (downloads with their size; per video the frame
  count or cut size), rewritten atomically after every step, and ``prepare_ava_report.json``.

Sources: the zip at ``annotations_url``, the list at ``<base_url>/annotations/<FILE_LIST>``,
each movie at ``<base_url>/trainval/<file name>``, fetched by :func:`bmvit.data.prepare.download.fetch`
(``.part`` files resumed with Range requests, retries with back-off), ``workers`` videos at a time
(threads: download, then decode and encode, which PyAV and Pillow run outside the GIL).

Idempotent: a video whose output is recorded complete and still verifies (frames folder with the
recorded number of frames, cut file with the recorded size) is neither downloaded nor written; a
download recorded complete with its size from the same URL is not requested again; annotation files equal to the
zip's are not rewritten. A different recipe on an existing ``out`` is refused. A video that cannot
be had (HTTP error, corrupt or truncated file, absent from the file list) stops the run under
``on_error="error"`` (what is complete stays; a re-run resumes) or is reported and skipped under
``"skip"``; a corrupt download is deleted so that a re-run fetches it again. So is an annotations
zip or file list that cannot be read (an error page served with 200, a damaged zip member), with
one line naming its URL.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import zipfile
import zlib
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from bmvit.atomic import atomic_output, make_folder, write_text
from bmvit.data.formats.ava import read_rows
from bmvit.data.formats.text_file import read_text
from bmvit.data.prepare.ava_report import Progress, disk_usage, human_bytes, keyframe_counts, recipe_doc
from bmvit.data.prepare.cut_video import DEFAULT_CRF, cut_video
from bmvit.data.prepare.download import DownloadError, Stopped, fetch
from bmvit.data.prepare.frames import Recipe, extract_frames
from bmvit.data.sources.video import VIDEO_EXTENSIONS
from bmvit.errors import ConfigError, DataError

__all__ = ["ANNOTATIONS_URL", "BASE_URL", "FILE_LIST", "REPORT_NAME", "STATE_NAME", "AvaOptions", "prepare_ava"]

ANNOTATIONS_URL = "https://research.google.com/ava/download/ava_v2.2.zip"
BASE_URL = "https://s3.amazonaws.com/ava-dataset"
FILE_LIST = "ava_file_names_trainval_v2.1.txt"
REPORT_NAME = "prepare_ava_report.json"
STATE_NAME = "prepare_ava_state.json"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*\Z")
_HINTS = {"error": "use --on-error skip to go on without this video; re-run to resume",
          "skip": "left out; a re-run tries it again"}


@dataclass(frozen=True)
class AvaOptions:
    annotations_url: str = ANNOTATIONS_URL
    base_url: str = BASE_URL
    splits: tuple[str, ...] = ("train", "val")
    recipe: Recipe = Recipe(start=900.0, end=1800.0)
    frames: bool = True  # False: keep cut videos (videos/<vid>.mp4) instead of frames
    crf: int = DEFAULT_CRF  # H.264 quality of the cuts (frames=False)
    workers: int = 4
    on_error: str = "error"  # error | skip
    keep_videos: bool = False  # keep downloads/videos/<file> after processing
    retries: int = 5
    backoff: float = 2.0  # seconds before the first retry, doubling
    timeout: float = 60.0  # seconds without data before a connection counts as failed
    progress: bool = True  # tqdm bars (shown on a terminal only)

    def check(self) -> None:
        self.recipe.check()
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.on_error not in ("error", "skip"):
            raise ConfigError(f"--on-error must be error or skip, got {self.on_error!r}")
        if not self.splits or any(s not in ("train", "val") for s in self.splits):
            raise ConfigError("--splits: expected a comma-separated subset of train,val, "
                              f"got {','.join(self.splits)!r}")
        for opt, url in (("--annotations-url", self.annotations_url), ("--base-url", self.base_url)):
            try:
                parts = urlsplit(url)
            except ValueError:  # e.g. an unclosed [IPv6 address
                parts = urlsplit("")
            if parts.scheme not in ("http", "https", "ftp", "file") or not (parts.netloc or parts.scheme == "file"):
                raise ConfigError(f"{opt}: expected an http://, https://, ftp:// or file:// URL, got {url!r}")
        if self.retries < 0 or self.backoff < 0 or self.timeout <= 0:
            raise ConfigError("--retries and --backoff must be >= 0 and --timeout > 0")

    def output_recipe(self) -> dict:
        r = {"output": "frames" if self.frames else "video", **asdict(self.recipe)}
        if not self.frames:
            r["crf"] = self.crf
        return r


@dataclass
class VideoResult:
    video: str
    status: str  # done | kept | failed | stopped (by another video's failure)
    frames: int = 0
    size: list[int] = field(default_factory=list)  # [H, W] written
    downloaded: int = 0  # bytes fetched by this run
    seconds: float = 0.0
    message: str = ""


class _State:
    """``prepare_ava_state.json``: complete downloads and outputs (thread-safe, atomic writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            self.doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            if not isinstance(self.doc, dict) or not all(isinstance(self.doc.get(k, {}), dict)
                                                         for k in ("downloads", "videos")):
                raise ValueError("not the JSON object bmvit writes")
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable state file ({e}); delete it to start over") from None
        self.doc.setdefault("downloads", {})
        self.doc.setdefault("videos", {})

    def update(self, section: str, key: str, value) -> None:
        with self.lock:
            if value is None:
                self.doc[section].pop(key, None)
            else:
                self.doc[section][key] = value
            write_text(self.path, json.dumps(self.doc, indent=1, sort_keys=True))


def _extract_zip(zip_path: Path, dest: Path) -> tuple[list[str], int]:
    """Members of the zip into ``dest`` by base name; files already equal are left alone.
    Returns ``(names, files written)``. A zip that cannot be read (not a zip, a damaged member)
    raises DataError; a member that cannot be written, OutputError."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: not a readable zip ({e})") from None
    names, written = [], 0
    make_folder(dest)  # a file in the way: one OutputError line
    with zf:
        for info in zf.infolist():
            name = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or not name or name.startswith(".") or "__MACOSX" in info.filename:
                continue
            if not _SAFE_NAME.match(name) or name in names:
                raise DataError(f"{zip_path}: member {info.filename!r} has an unusable or repeated file name")
            names.append(name)
            target = dest / name
            if target.is_file() and target.stat().st_size == info.file_size:
                with open(target, "rb") as f:
                    crc = zlib.crc32(f.read())
                if crc == info.CRC:
                    continue
            try:
                with atomic_output(target) as tmp, zf.open(info) as src, open(tmp, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
                # damaged data (bad CRC, truncated), an unsupported compression method or an encrypted member
                raise DataError(f"{zip_path}: not a readable zip (member {info.filename!r}: {e})") from None
            written += 1
    return names, written


def _read_file_list(path: Path) -> dict[str, str]:
    """Video id (file name without extension) -> file name."""
    files: dict[str, str] = {}
    for line_no, line in enumerate(read_text(path, "AVA file list").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not _SAFE_NAME.match(name) or "." not in name or name.rsplit(".", 1)[1].lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"{path}:{line_no}: expected a video file name like abc123.mkv, got {name!r}")
        files[name.rsplit(".", 1)[0]] = name
    if not files:
        raise DataError(f"{path}: empty file list")
    return files


def _split_csv(annotations: Path, split: str, zip_names: list[str]) -> Path:
    found = sorted(n for n in zip_names if re.fullmatch(rf"ava_{split}_v\d+(\.\d+)?\.csv", n))
    if len(found) != 1:
        raise DataError(f"{annotations}: expected one ava_{split}_v*.csv from the annotations zip, found "
                        f"{found or 'none'} (check --annotations-url)")
    return annotations / found[0]


def _verify_output(out: Path, vid: str, rec: dict | None, frames: bool, ext: str = "jpg") -> bool:
    """Is the recorded output of ``vid`` still complete on disk?"""
    if not rec:
        return False
    if frames:
        folder = out / "frames" / vid
        if not folder.is_dir():
            return False
        return sum(1 for n in os.listdir(folder) if n.startswith(f"{vid}_") and n.endswith(f".{ext}")) == rec["frames"]
    p = out / "videos" / f"{vid}.mp4"
    return p.is_file() and p.stat().st_size == rec["bytes"]


def _folder_bytes(folder: Path) -> int:
    with os.scandir(folder) as it:
        return sum(e.stat().st_size for e in it if e.is_file())


class _Run:
    """One ``prepare_ava`` call: options, paths, state, progress and the stop flag shared by the workers."""

    def __init__(self, out: Path, opts: AvaOptions, log) -> None:
        self.out, self.opts, self.log = out, opts, log
        self.state = _State(out / STATE_NAME)
        self.stop = threading.Event()
        self.progress = Progress(opts.progress)

    def download(self, url: str, rel: str, hint: str) -> tuple[Path, int]:
        """Fetch ``url`` to ``out/rel`` unless recorded complete (from the same URL); returns (path, bytes
        fetched now)."""
        dest = self.out / rel
        rec = self.state.doc["downloads"].get(rel, {})
        known = rec.get("bytes") if rec.get("url") == url else None
        if known is not None and dest.is_file() and dest.stat().st_size == known:
            return dest, 0
        got, sized = [0], [False]

        def on_bytes(n: int) -> None:
            got[0] += n
            self.progress.add_bytes(n)

        def on_total(n: int) -> None:
            sized[0] = True  # the server announced the length: a body cut short is detected by fetch
            self.progress.expect_bytes(n)

        size = fetch(url, dest, retries=self.opts.retries, backoff=self.opts.backoff, timeout=self.opts.timeout,
                     hint=hint, on_bytes=on_bytes, on_total=on_total, stop=self.stop)
        self.state.update("downloads", rel, {"url": url, "bytes": size, "sized": sized[0]})
        return dest, got[0]

    def drop(self, rel: str) -> None:
        """Delete the download ``out/rel`` and its record: the next run fetches it again."""
        (self.out / rel).unlink(missing_ok=True)
        self.state.update("downloads", rel, None)

    def forget(self, rel: str, url: str, e: DataError, check: str) -> DataError:
        """A download that turned out unusable (an error page, a damaged zip): deleted and unrecorded,
        so that a re-run fetches it again; returns the error to raise."""
        self.drop(rel)
        return DataError(f"{e} (from {url}; the download was deleted, a re-run fetches it again; {check})")

    def video(self, vid: str, file_name: str | None) -> VideoResult:
        opts, t0 = self.opts, time.perf_counter()
        if file_name is None:
            return VideoResult(vid, "failed", message=f"{self.out / 'annotations' / FILE_LIST}: video '{vid}' of the "
                               f"split CSVs is not in the file list ({_HINTS[opts.on_error].split(';')[0]})")
        rec = self.state.doc["videos"].get(vid)
        if _verify_output(self.out, vid, rec, opts.frames, opts.recipe.ext):
            return VideoResult(vid, "kept", rec["frames"], rec["size"])
        url = f"{opts.base_url.rstrip('/')}/trainval/{quote(file_name)}"
        rel = f"downloads/videos/{file_name}"
        try:
            src, got = self.download(url, rel, _HINTS[opts.on_error])
        except Stopped:
            return VideoResult(vid, "stopped")
        except DownloadError as e:
            return VideoResult(vid, "failed", message=str(e))
        try:
            if opts.frames:
                r = extract_frames(src, self.out / "frames", opts.recipe, video_id=vid)
                n, size, nbytes = r.frames, r.size, _folder_bytes(self.out / "frames" / vid)
            else:
                n, hw = cut_video(src, self.out / "videos", opts.recipe, vid, crf=opts.crf)
                size, nbytes = list(hw), (self.out / "videos" / f"{vid}.mp4").stat().st_size
        except DataError as e:
            src.unlink(missing_ok=True)
            self.state.update("downloads", rel, None)
            way_out = "; use --on-error skip to go on without this video" if opts.on_error == "error" else ""
            return VideoResult(vid, "failed", downloaded=got, message=f"{e} (from {url}; the download was deleted, "
                               f"a re-run fetches it again{way_out})")
        self.state.update("videos", vid, {"frames": n, "size": list(size), "bytes": nbytes})
        if not opts.keep_videos:
            src.unlink(missing_ok=True)
            self.state.update("downloads", rel, None)
        return VideoResult(vid, "done", n, list(size), got, round(time.perf_counter() - t0, 2))

    def videos(self, todo: list[tuple[str, str | None]]) -> list[VideoResult]:
        """Run :meth:`video` on ``workers`` threads; under ``on_error="error"`` the first failure stops
        the others (running downloads give up, keeping their ``.part``) and is raised."""
        results: dict[int, VideoResult] = {}  # by position in todo
        first_failure: VideoResult | None = None
        self.progress.start_videos(len(todo))
        with ThreadPoolExecutor(max_workers=self.opts.workers) as ex:
            futures = {ex.submit(self.video, vid, name): i for i, (vid, name) in enumerate(todo)}
            pending = set(futures)
            try:
                while pending:  # as they finish: a failure stops the others now, not after earlier videos
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=futures.__getitem__):
                        if fut.cancelled():
                            continue
                        r = fut.result()
                        if r.status == "stopped":
                            continue
                        results[futures[fut]] = r
                        self.progress.video_done()
                        self.log(_video_line(r))
                        if r.status == "failed" and self.opts.on_error == "error" and first_failure is None:
                            first_failure = r
                            self.stop.set()
                            for f in futures:
                                f.cancel()
            except BaseException as e:  # Ctrl-C, a full disk: running downloads give up, keeping their .part
                self.stop.set()
                for f in futures:
                    f.cancel()
                if isinstance(e, OSError):
                    raise DataError(f"{e.filename or self.out}: {e.strerror or e} (free space / fix permissions, "
                                    "then re-run to resume)") from None
                raise
            finally:
                self.progress.close()
        if first_failure is not None:
            raise DataError(first_failure.message)
        return [results[i] for i in sorted(results)]


def _video_line(r: VideoResult) -> str:
    if r.status == "failed":
        return f"{r.video}: FAILED: {r.message}"
    what = f"{r.frames} frames {r.size[1]}x{r.size[0]}" if r.size else f"{r.frames} frames"
    if r.status == "kept":
        return f"{r.video}: complete ({what}), kept"
    return f"{r.video}: {what}, downloaded {human_bytes(r.downloaded)} ({r.seconds:.1f} s)"


def prepare_ava(out: str | Path, opts: AvaOptions = AvaOptions(), log=print) -> dict:
    """Acquire and prepare AVA into ``out`` (module docstring); returns the report (also written to
    ``out/prepare_ava_report.json``). Raises DataError / DownloadError / ConfigError."""
    opts.check()
    out = make_folder(out)
    t0 = time.perf_counter()
    run = _Run(out, opts, log)
    recipe = opts.output_recipe()
    old = run.state.doc.get("recipe")
    if old is not None and old != recipe and run.state.doc["videos"]:
        raise ConfigError(f"{run.state.path}: {out} was prepared with {old}, this run asks for {recipe} "
                          "(use the same options, or another --out)")
    with run.state.lock:
        run.state.doc["recipe"] = recipe
    zip_rel = "downloads/" + (opts.annotations_url.rstrip("/").rsplit("/", 1)[-1] or "annotations.zip")
    zip_path, zip_got = run.download(opts.annotations_url, zip_rel, "check --annotations-url; re-run to resume")
    try:
        names, ann_written = _extract_zip(zip_path, out / "annotations")
    except DataError as e:
        raise run.forget(zip_rel, opts.annotations_url, e, "check --annotations-url") from None
    list_url = f"{opts.base_url.rstrip('/')}/annotations/{FILE_LIST}"
    list_path, list_got = run.download(list_url, f"annotations/{FILE_LIST}", "check --base-url; re-run to resume")
    try:
        files = _read_file_list(list_path)
    except DataError as e:
        raise run.forget(f"annotations/{FILE_LIST}", list_url, e, "check --base-url") from None
    csvs = {s: _split_csv(out / "annotations", s, names) for s in opts.splits}
    rows = {s: read_rows(p) for s, p in csvs.items()}
    vids = sorted({v for r in rows.values() for v in r.video_ids})
    lacking = [v for v in vids if v not in files]
    if lacking and run.state.doc["downloads"].get(f"annotations/{FILE_LIST}", {}).get("sized") is False:
        # sent without a length, a list cut short at a line's end looks complete: do not keep trusting it
        run.drop(f"annotations/{FILE_LIST}")
        log(f"note: {list_path} came without a length and lacks {len(lacking)} video(s) of the split CSVs: "
            f"it may have been cut short; a re-run fetches it again")
    log(f"annotations: {len(names)} file(s) in {out / 'annotations'} ({ann_written} written); "
        f"{len(vids)} video(s) in {', '.join(f'{csvs[s].name}' for s in opts.splits)}; "
        f"{len(files)} in the file list")
    results = run.videos([(v, files.get(v)) for v in vids])
    outputs = {v: rec for v, rec in run.state.doc["videos"].items()
               if _verify_output(out, v, rec, opts.frames, opts.recipe.ext)}
    report = {
        "out": str(out),
        "sources": {"annotations": opts.annotations_url, "file_list": list_url,
                    "videos": f"{opts.base_url.rstrip('/')}/trainval/<file name>"},
        "splits": list(opts.splits),
        "videos": {"expected": len(vids), "present": sum(v in outputs for v in vids),
                   "failed": sum(r.status == "failed" for r in results),
                   "written": sum(r.status == "done" for r in results),
                   "kept": sum(r.status == "kept" for r in results)},
        "failed": [{"video": r.video, "message": r.message} for r in results if r.status == "failed"],
        "keyframes": keyframe_counts(rows, outputs, opts.recipe),
        "downloaded_bytes": zip_got + list_got + sum(r.downloaded for r in results),
        "disk_bytes": disk_usage(out, outputs),
        "recipe": recipe_doc(recipe),
        "layout": {"data.root": str(out), "data.frames_dir": "frames" if opts.frames else None,
                   "data.video_dir": None if opts.frames else "videos",
                   **{f"data.{s}_csv": f"annotations/{csvs[s].name}" for s in opts.splits}},
        "per_video": [asdict(r) for r in results],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_text(out / REPORT_NAME, json.dumps(report, indent=2))
    return report
