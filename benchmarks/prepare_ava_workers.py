"""Does ``bmvit prepare ava --workers N`` run videos in parallel? (threads: PyAV and Pillow release the GIL)

Serves ``--movies`` generated movies (``--seconds`` long, ``--size`` WxH, 30 fps H.264) on 127.0.0.1,
then prepares them into fresh folders alternately with ``--workers 1`` and ``--workers N``
(``--repeats`` times each) and prints the wall time of each run, the process CPU time, and the
speed-up of the medians. On a machine shared with other jobs the wall times move; the speed-up
is bounded by the free cores.

    python benchmarks/prepare_ava_workers.py --movies 4 --seconds 6 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from ava_server import AvaServer, annotations_zip  # noqa: E402
from data_fixtures import write_mp4  # noqa: E402

from bmvit.data.prepare.ava import AvaOptions, prepare_ava  # noqa: E402
from bmvit.data.prepare.frames import Recipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movies", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--size", default="480x270", help="WxH of the generated movies")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    os.environ["no_proxy"] = "127.0.0.1"
    w, h = (int(x) for x in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="prepare_ava_bench_"))
    rng = np.random.default_rng(0)
    try:
        with AvaServer() as server:
            names = [f"m{i:02d}.mp4" for i in range(args.movies)]
            base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
            for n in names:  # moving texture: real decoding and JPEG work
                frames = [np.roll(base, 3 * f, axis=1) for f in range(30 * args.seconds)]
                server.files[f"/trainval/{n}"] = write_mp4(tmp / "src" / n, frames, fps=30).read_bytes()
            csv = "".join(f"{n[:-4]},1,0.1,0.1,0.5,0.9,1,0\n" for n in names)
            server.files["/ava_v2.2.zip"] = annotations_zip({"ava_train_v2.2.csv": csv, "ava_val_v2.2.csv": csv})
            server.files["/annotations/ava_file_names_trainval_v2.1.txt"] = ("\n".join(names) + "\n").encode()
            times: dict[int, list[float]] = {1: [], args.workers: []}
            for r in range(args.repeats):
                for workers in (1, args.workers):
                    out = tmp / f"out_{workers}_{r}"
                    opts = AvaOptions(annotations_url=f"{server.base}/ava_v2.2.zip", base_url=server.base,
                                      splits=("train",), recipe=Recipe(start=0, end=args.seconds),
                                      workers=workers, progress=False)
                    t0, c0 = time.perf_counter(), time.process_time()
                    prepare_ava(out, opts, log=lambda _: None)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    times[workers].append(wall)
                    print(f"workers {workers}: {args.movies} movies x {30 * args.seconds} frames {w}x{h}: "
                          f"wall {wall:.2f} s, cpu {cpu:.2f} s", flush=True)
                    shutil.rmtree(out)
            m1, mn = statistics.median(times[1]), statistics.median(times[args.workers])
            print(f"speed-up of --workers {args.workers} over --workers 1 (median wall): {m1 / mn:.2f}x "
                  f"(cores: {os.cpu_count()})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
