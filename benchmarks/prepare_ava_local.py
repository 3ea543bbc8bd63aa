"""Transcript of ``bmvit prepare ava`` against a local AVA mirror on 127.0.0.1 (first run and re-run).

Starts the tests' server (tests/ava_server.py: tiny 3 s movies, a zip, a file list; vidA's
connection is dropped once mid-file, vidC is a 404, vidD is corrupt, vidE is absent from the
list), runs the real command line in a subprocess, serves vidC and vidD, re-runs it twice and
prints what a user sees and which requests reached the server:

    python benchmarks/prepare_ava_local.py [--out DIR]

Nothing leaves the machine: every URL is http://127.0.0.1:<port>/...
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ava_server import AvaServer, standard_mirror  # noqa: E402


def run(cmd: list[str], env: dict) -> None:
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(p.stdout.rstrip())
    print(f"[exit status {p.returncode}]\n", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="dataset folder (default: a temporary one, deleted)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="prepare_ava_"))
    out = args.out or tmp / "ava"
    env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    bmvit = str(Path(sys.executable).with_name("bmvit"))
    try:
        with AvaServer() as server:
            standard_mirror(server, tmp / "src")
            server.drop_once.add("/trainval/vidA.mp4")
            cmd = [bmvit, "prepare", "ava", "--out", str(out), "--base-url", server.base,
                   "--annotations-url", f"{server.base}/ava_v2.2.zip", "--start", "1", "--end", "2.5",
                   "--workers", "2", "--on-error", "skip", "--backoff", "0.2", "--no-progress"]
            print(f"# server {server.base}: vidA dropped once mid-file, vidC 404, vidD corrupt, vidE not listed\n")
            run(cmd, env)
            print(f"# requests of the first run: {len(server.requests)} "
                  f"({sum(r is not None for _, r in server.requests)} with Range: "
                  f"{[f'{p} {r}' for p, r in server.requests if r]})\n")
            server.files["/trainval/vidC.mp4"] = server.files["/trainval/vidA.mp4"]
            server.files["/trainval/vidD.webm"] = server.files["/trainval/vidB.mkv"]
            print("# the mirror now serves vidC and vidD; re-run\n")
            server.requests.clear()
            run(cmd, env)
            print(f"# requests of the re-run: {len(server.requests)} {sorted(p for p, _ in server.requests)}\n")
            server.requests.clear()
            run(cmd, env)
            print(f"# requests of the third run: {len(server.requests)} {sorted(p for p, _ in server.requests)}")
    finally:
        if args.out is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
