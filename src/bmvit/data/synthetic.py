"""Procedural action videos written in the AVA on-disk layout.

Every video shows 0–4 *actors* and 0–2 *distractors* — identical stick figures — on a cluttered,
noisy background. Time is cut into one-second segments centred on the key frames; in each segment
an actor draws a non-empty set of actions from three independent groups, so labels co-occur:

==  ============  ==============================================================
id  name          what the figure does during the segment
==  ============  ==============================================================
1   walk left     moves left (legs swing)         } same frames, opposite order:
2   walk right    moves right (legs swing)        } only temporal order tells them apart
3   wave          one forearm oscillates above the head
4   raise arm     one arm sweeps from down to up  } same frames, opposite order
5   lower arm     one arm sweeps from up to down  }
6   jump          the whole figure hops twice
==  ============  ==============================================================

Distractors (and actors in a segment where they happen to do nothing, p=``idle_prob``) sway,
shuffle and drift slowly — person-like motion that is none of the actions — and are never
annotated: the detector must find *actors*, not persons.

Layout (read by :mod:`bmvit.data.clips` exactly like AVA)::

    OUT/frames/<vid>/<vid>_%06d.jpg        30 fps, frame 1 = second 900 (the AVA convention)
    OUT/annotations/{train,val}.csv        video_id,timestamp,x1,y1,x2,y2,action_id,person_id
    OUT/annotations/label_map.pbtxt
    OUT/manifest.json                      generator parameters (regeneration is skipped if equal)

Train and validation videos are drawn from different seeds (``seed`` and ``seed + 1``).
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bmvit.atomic import output_error, write_text
from bmvit.data.formats.ava import AvaRows, write_label_map, write_rows
from bmvit.errors import ConfigError, OutputError

ACTIONS: dict[int, str] = {1: "walk left", 2: "walk right", 3: "wave", 4: "raise arm", 5: "lower arm", 6: "jump"}
FPS = 30
FIRST_SECOND = 900  # AVA convention: frame 1 is at second 900.
GENERATOR_VERSION = 2  # 2: no rows with empty boxes (figure fully outside the frame)
INCOMPLETE = ".synth-incomplete"  # the marker of a generation under way (or killed)


@dataclass(frozen=True)
class SynthSpec:
    """Generator parameters; all sizes in pixels unless stated."""

    train_videos: int = 160
    val_videos: int = 40
    seconds: int = 8
    width: int = 160
    height: int = 120
    seed: int = 0
    max_actors: int = 4
    max_distractors: int = 2
    min_person: float = 0.25  # person height as a fraction of the frame height
    max_person: float = 0.6
    noise: float = 10.0  # std of per-frame Gaussian pixel noise
    idle_prob: float = 0.1
    jpeg_quality: int = 90


@dataclass
class _Segment:
    walk: int  # -1 left, +1 right, 0 none
    arm: str  # "none" | "wave" | "raise" | "lower"
    jump: bool
    speed: float  # pixels / second for walking

    def labels(self) -> list[int]:
        out = []
        if self.walk < 0:
            out.append(1)
        if self.walk > 0:
            out.append(2)
        out += {"wave": [3], "raise": [4], "lower": [5]}.get(self.arm, [])
        if self.jump:
            out.append(6)
        return out


@dataclass
class _Person:
    actor: bool
    height: float
    x: float  # centre x at t=0
    y: float  # feet y
    colour: tuple[int, int, int]
    head: tuple[int, int, int]
    side: int  # which arm acts: -1 left, +1 right
    segments: list[_Segment]
    sway: np.ndarray  # (frames, 2) idle jitter offsets
    drift: float


def _sample_segments(rng: np.random.Generator, p: _Person, spec: SynthSpec) -> None:
    """Choose one segment of behaviour per second (segment s is centred on key frame s)."""
    x = p.x
    margin = 0.15 * p.height + 4
    for _ in range(spec.seconds + 1):
        if not p.actor or rng.random() < spec.idle_prob:
            p.segments.append(_Segment(0, "none", False, 0.0))
            continue
        while True:
            walk = int(rng.choice([-1, 0, 1], p=[0.3, 0.4, 0.3]))
            arm = str(rng.choice(["none", "wave", "raise", "lower"], p=[0.4, 0.2, 0.2, 0.2]))
            jump = bool(rng.random() < 0.25)
            if walk or arm != "none" or jump:
                break
        speed = float(rng.uniform(0.18, 0.32) * spec.width)
        if walk and not (margin < x + walk * speed < spec.width - margin):
            walk = -walk
        if walk and not (margin < x + walk * speed < spec.width - margin):
            walk = 0
            if arm == "none" and not jump:
                arm = "wave"
        x += walk * speed
        p.segments.append(_Segment(walk, arm, jump, speed))


def _make_people(rng: np.random.Generator, spec: SynthSpec) -> list[_Person]:
    n_act = int(rng.integers(0, spec.max_actors + 1))
    n_dis = int(rng.integers(0, spec.max_distractors + 1))
    frames = spec.seconds * FPS
    people = []
    for k in range(n_act + n_dis):
        h = float(rng.uniform(spec.min_person, spec.max_person) * spec.height)
        margin = 0.15 * h + 4
        sway = np.cumsum(rng.normal(0, 0.35, size=(frames, 2)), axis=0)
        sway -= np.linspace(0, 1, frames)[:, None] * sway[-1]  # bounded random walk
        p = _Person(
            actor=k < n_act,
            height=h,
            x=float(rng.uniform(margin, spec.width - margin)),
            y=float(rng.uniform(h + 2, spec.height - 2)),
            colour=tuple(int(c) for c in rng.integers(30, 226, 3)),
            head=tuple(int(c) for c in rng.integers(150, 256, 3)),
            side=int(rng.choice([-1, 1])),
            segments=[],
            sway=sway,
            drift=float(rng.uniform(-4, 4)),
        )
        _sample_segments(rng, p, spec)
        people.append(p)
    return people


def _pose(p: _Person, frame: int, x: float) -> tuple[list[tuple[float, float, float, float, float]], tuple[float, float, float]]:
    """Limb segments ``(x0, y0, x1, y1, width)`` and head ``(cx, cy, r)`` of a person at one frame."""
    t = frame / FPS
    s = min(int(math.floor(t + 0.5)), len(p.segments) - 1)
    seg = p.segments[s]
    u = t - (s - 0.5)  # phase within the segment, in [0, 1)
    h = p.height
    dx, dy = p.sway[frame] if not (seg.walk or seg.jump) else (0.0, 0.0)
    feet_y = p.y + dy - (0.18 * h * abs(math.sin(2 * math.pi * u)) if seg.jump else 0.0)
    cx = x + dx
    hip_y, shoulder_y = feet_y - 0.45 * h, feet_y - 0.78 * h
    head_r = 0.1 * h
    head = (cx, shoulder_y - head_r * 1.05, head_r)
    lw = max(1.5, 0.07 * h)
    leg = 0.45 * h
    swing = 0.45 * math.sin(2 * math.pi * 2 * u) if seg.walk else 0.06 * math.sin(2 * math.pi * 0.7 * t + p.x)
    limbs = [(cx, shoulder_y, cx, hip_y, 0.2 * h)]  # torso
    for sgn in (-1, 1):
        a = sgn * swing + 0.12 * sgn
        limbs.append((cx, hip_y, cx + leg * math.sin(a), hip_y + leg * math.cos(a), lw))
    arm = 0.34 * h
    for sgn in (-1, 1):
        # angle from straight down, positive = raised to the side
        ang = 0.25 + 0.08 * math.sin(2 * math.pi * 0.5 * t + p.y)
        if sgn == p.side:
            if seg.arm == "raise":
                ang = 0.15 + u * (math.pi - 0.3)
            elif seg.arm == "lower":
                ang = math.pi - 0.15 - u * (math.pi - 0.3)
            elif seg.arm == "wave":
                ang = math.pi * 0.8
        sx = cx + sgn * 0.1 * h
        ex, ey = sx + sgn * arm * 0.55 * math.sin(ang), shoulder_y + arm * 0.55 * math.cos(ang)
        limbs.append((sx, shoulder_y, ex, ey, lw))
        fa = ang + (0.9 * math.sin(2 * math.pi * 3 * u) if (sgn == p.side and seg.arm == "wave") else 0.0)
        limbs.append((ex, ey, ex + sgn * arm * 0.45 * math.sin(fa), ey + arm * 0.45 * math.cos(fa), lw))
    return limbs, head


def _bounds(limbs, head) -> tuple[float, float, float, float]:
    xs, ys = [], []
    for x0, y0, x1, y1, w in limbs:
        xs += [x0 - w / 2, x1 - w / 2, x0 + w / 2, x1 + w / 2]
        ys += [y0, y1]
    cx, cy, r = head
    xs += [cx - r, cx + r]
    ys += [cy - r, cy + r]
    return min(xs), min(ys), max(xs), max(ys)


def _background(rng: np.random.Generator, spec: SynthSpec) -> Image.Image:
    w, h = spec.width, spec.height
    base = rng.integers(40, 200, 3)
    grad = np.linspace(-30, 30, h)[:, None, None] * rng.uniform(-1, 1)
    img = np.clip(base[None, None, :] + grad + np.zeros((h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(15, 30))):  # clutter: boxes, ellipses, poles, lines
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-10, w), rng.uniform(-10, h)
        kind = rng.integers(4)
        if kind == 0:
            d.rectangle([x0, y0, x0 + rng.uniform(5, 40), y0 + rng.uniform(5, 40)], fill=c)
        elif kind == 1:
            d.ellipse([x0, y0, x0 + rng.uniform(5, 30), y0 + rng.uniform(5, 30)], fill=c)
        elif kind == 2:  # vertical pole: person-like in width, not in shape
            d.rectangle([x0, y0, x0 + rng.uniform(2, 6), y0 + rng.uniform(20, 60)], fill=c)
        else:
            d.line([x0, y0, x0 + rng.uniform(-40, 40), y0 + rng.uniform(-40, 40)], fill=c, width=int(rng.integers(1, 4)))
    return im


def _render_video(args: tuple[str, int, SynthSpec, str]) -> list[tuple]:
    vid, seed, spec, out_dir = args
    rng = np.random.default_rng(seed)
    people = _make_people(rng, spec)
    bg = _background(rng, spec)
    noise_bank = rng.normal(0, spec.noise, size=(8, spec.height, spec.width, 3)).astype(np.float32)
    folder = Path(out_dir) / "frames" / vid
    folder.mkdir(parents=True, exist_ok=True)
    # Integrate horizontal positions frame by frame (walking + slow drift).
    frames = spec.seconds * FPS
    xs = np.zeros((len(people), frames))
    for i, p in enumerate(people):
        x = p.x
        for f in range(frames):
            seg = p.segments[min(int(math.floor(f / FPS + 0.5)), len(p.segments) - 1)]
            xs[i, f] = x
            x += (seg.walk * seg.speed + (0.0 if p.actor else p.drift)) / FPS
    rows = []
    order = sorted(range(len(people)), key=lambda i: people[i].y)  # far (higher) people first
    for f in range(frames):
        im = bg.copy()
        d = ImageDraw.Draw(im)
        for i in order:
            limbs, head = _pose(people[i], f, xs[i, f])
            p = people[i]
            for j, (x0, y0, x1, y1, w) in enumerate(limbs):
                d.line([x0, y0, x1, y1], fill=p.colour, width=max(1, int(round(w))))
            cx, cy, r = head
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=p.head)
        arr = np.asarray(im, dtype=np.float32) + noise_bank[int(rng.integers(8))]
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            folder / f"{vid}_{f + 1:06d}.jpg", quality=spec.jpeg_quality
        )
        if f % FPS == 0 and 1 <= f // FPS <= spec.seconds - 1:
            s = f // FPS
            for i, p in enumerate(people):
                labels = p.segments[s].labels() if p.actor else []
                if not labels:
                    continue
                x1, y1, x2, y2 = _bounds(*_pose(p, f, xs[i, f]))
                box = np.clip([x1 / spec.width, y1 / spec.height, x2 / spec.width, y2 / spec.height], 0, 1)
                written = np.round(box, 3)  # the CSV keeps 3 decimals
                if written[2] <= written[0] or written[3] <= written[1]:
                    continue  # the figure is outside the frame: nothing to annotate (an empty box is invalid)
                for a in labels:
                    rows.append((vid, FIRST_SECOND + s, *box, a, i))
    return rows


# Valid ranges of the SynthSpec fields a user sets (``bmvit synth`` options): (minimum, maximum or None).
SPEC_RANGES: dict[str, tuple[float, float | None]] = {
    "train_videos": (1, None), "val_videos": (0, None), "seconds": (2, None), "width": (32, 4096),
    "height": (32, 4096), "seed": (0, 2**32 - 1), "max_actors": (0, None), "max_distractors": (0, None),
    "min_person": (0.05, 1.0), "max_person": (0.05, 1.0), "noise": (0.0, None), "idle_prob": (0.0, 1.0),
    "jpeg_quality": (1, 95),
}


def check_spec(spec: SynthSpec) -> None:
    """Raise :class:`ConfigError` naming the first field of ``spec`` outside its valid range."""
    for name, (lo, hi) in SPEC_RANGES.items():
        v = getattr(spec, name)
        if not (math.isfinite(v) and v >= lo and (hi is None or v <= hi)):
            valid = f"≥ {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]"
            raise ConfigError(f"synthetic dataset: '{name}' = {v!r} must be {valid}")
    if spec.min_person > spec.max_person:
        raise ConfigError(f"synthetic dataset: 'min_person' ({spec.min_person}) must be ≤ 'max_person' ({spec.max_person})")


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or corrupt: regenerate
        return None


def generate(out: str | Path, spec: SynthSpec = SynthSpec(), workers: int | None = None, force: bool = False) -> Path:
    """Write the synthetic dataset under ``out``; returns ``out``. Skips work if already generated.

    ``spec`` outside :data:`SPEC_RANGES` raises :class:`ConfigError`; an unwritable ``out`` an
    :class:`~bmvit.errors.OutputError`. The manifest is written last, so an interrupted run is redone
    (a marker file says the folder is this generator's meanwhile); ``frames/`` or ``annotations/``
    that neither a manifest nor the marker claim (someone's dataset) are never deleted: OutputError."""
    check_spec(spec)
    out = Path(out)
    manifest = {"version": GENERATOR_VERSION, **asdict(spec)}
    mpath = out / "manifest.json"
    if not force and mpath.is_file() and _read_manifest(mpath) == manifest:
        return out
    marker = out / INCOMPLETE  # written before the first frame, removed with the manifest's writing
    theirs = [sub for sub in ("frames", "annotations") if (out / sub).exists()]
    if theirs and not (mpath.exists() or marker.exists()):  # not a folder this generator wrote: keep it
        raise OutputError(f"{out}: holds {' and '.join(f'{t}/' for t in theirs)} that bmvit synth did not write "
                          f"(no {mpath.name}); choose another --out, or remove them to regenerate here")
    try:
        if out.exists():
            for sub in ("frames", "annotations"):
                shutil.rmtree(out / sub, ignore_errors=True)
            mpath.unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError as e:
        raise output_error(out, e) from None
    splits = {"train": (spec.train_videos, spec.seed), "val": (spec.val_videos, spec.seed + 1)}
    jobs = []
    for split, (n, seed) in splits.items():
        seeds = np.random.SeedSequence(seed).spawn(n)
        jobs += [(f"syn_{split}_{i:04d}", int(s.generate_state(1)[0]), spec, str(out)) for i, s in enumerate(seeds)]
    workers = workers or min(len(jobs), mp.cpu_count()) or 1
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.map(_render_video, jobs, chunksize=4)
    else:
        results = [_render_video(j) for j in jobs]
    by_split: dict[str, list] = {"train": [], "val": []}
    for job, rows in zip(jobs, results):
        by_split[job[0].split("_")[1]] += rows
    for split, rows in by_split.items():
        ava = AvaRows(
            [r[0] for r in rows],
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2:6] for r in rows], np.float64).reshape(-1, 4),
            np.array([r[6] for r in rows], np.int64),
            np.array([r[7] for r in rows], np.float64),
        )
        write_rows(out / "annotations" / f"{split}.csv", ava, person_or_score_format="{:d}")
    write_label_map(out / "annotations" / "label_map.pbtxt", ACTIONS)
    write_text(mpath, json.dumps(manifest, indent=2))
    marker.unlink(missing_ok=True)
    return out
