"""engine/host_memory.py: after keep_freed_memory() a large block comes from the heap (not its own
mmap) and stays in the process after free; turned off by BMVIT_KEEP_FREED_MEMORY=0; the CLI applies it."""

import os
import subprocess
import sys
import textwrap

import pytest

from bmvit.engine import host_memory

glibc = host_memory._glibc()
pytestmark = pytest.mark.skipif(glibc is None or not hasattr(glibc, "mallinfo2"), reason="needs glibc >= 2.33")

# A fresh interpreter (no torch: nothing has moved glibc's dynamic mmap threshold yet) mallocs a
# 24 MiB block and prints: returned flag, bytes mmapped for it, heap bytes kept after its free.
PROBE = textwrap.dedent("""
    import ctypes, sys
    from bmvit.engine.host_memory import keep_freed_memory
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    on = keep_freed_memory() if sys.argv[1] == "keep" else False
    before = libc.mallinfo2()
    p = libc.malloc(24 << 20)
    ctypes.memset(p, 1, 24 << 20)
    during = libc.mallinfo2()
    libc.free(p)
    after = libc.mallinfo2()
    print(on, during.hblkhd - before.hblkhd, after.arena - before.arena)
""")


def _probe(mode: str, **env) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env}, check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


def test_large_block_from_the_heap_and_kept_after_free():
    on, mmapped, kept = _probe("keep")
    assert on == "True"
    assert mmapped == 0  # served from the heap
    assert kept >= 24 << 20  # the heap did not give it back to the kernel


def test_without_it_the_block_is_mmapped_and_returned():
    on, mmapped, kept = _probe("plain")
    assert on == "False"
    assert mmapped >= 24 << 20
    assert kept < 24 << 20


def test_turned_off_by_the_environment():
    on, mmapped, _ = _probe("keep", BMVIT_KEEP_FREED_MEMORY="0")
    assert on == "False" and mmapped >= 24 << 20


def test_the_cli_applies_it(monkeypatch, capsys):
    from bmvit.cli import main as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["eval"]) == 2  # a user error after the start: one line, exit 2
    assert calls == [1]
    assert "give --run DIR or --checkpoint FILE" in capsys.readouterr().err



def test_a_bad_value_is_one_error_line():
    r = subprocess.run([sys.executable, "-m", "bmvit", "eval-ava", "--help"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "BMVIT_KEEP_FREED_MEMORY": "maybe"})
    assert r.returncode == 0  # --help exits before any verb runs
    r = subprocess.run([sys.executable, "-m", "bmvit", "eval"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "BMVIT_KEEP_FREED_MEMORY": "maybe"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0] == "error: environment variable BMVIT_KEEP_FREED_MEMORY='maybe': expected 0 or 1"
