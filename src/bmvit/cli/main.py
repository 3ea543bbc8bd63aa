"""``bmvit`` command line: one module per verb, dispatched here.

Only the module of the verb being run is imported (``bmvit --help`` or an unknown verb imports
them all), so verbs that do not need torch — ``eval-ava``, ``eval-frame``, ``eval-video`` — start
without importing it.

Every verb starts with :func:`~bmvit.engine.host_memory.keep_freed_memory` (glibc keeps the memory
the process frees: ~1.1-1.2x faster CPU steps in a VM; ``BMVIT_KEEP_FREED_MEMORY=0`` turns it off).

Errors a user can cause print one line ``error: ...`` (exit status 2); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # don't spin-wait: keeps steps fast on a busy machine

from bmvit.engine.host_memory import keep_freed_memory  # noqa: E402
from bmvit.errors import BmvitError, Interrupted  # noqa: E402

# verb -> module defining add_parser(sub), in the order `bmvit --help` lists them
VERBS = {
    "synth": "bmvit.cli.synth", "train": "bmvit.cli.train", "eval": "bmvit.cli.eval",
    "eval-ava": "bmvit.cli.eval_ava", "eval-frame": "bmvit.cli.eval_frame", "eval-video": "bmvit.cli.eval_video",
    "convert": "bmvit.cli.convert", "flops": "bmvit.cli.flops", "benchmark": "bmvit.cli.benchmark",
    "detect": "bmvit.cli.detect", "export": "bmvit.cli.export", "show": "bmvit.cli.show",
    "prepare": "bmvit.cli.prepare",
}


_OVERRIDE = re.compile(r"[A-Za-z_][\w.]*=")  # a config override key=value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too: ``error: <prog>: <what>`` and how to get help, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


# options whose value is a video id: AVA ids may begin with '-' ("-5KQ66BBWC4"), which argparse
# takes for an option unless given as --video=ID
_VIDEO_ID_OPTIONS = ("--video", "--video-id")


def _join_video_ids(argv: list[str]) -> list[str]:
    """``--video -5KQ66BBWC4`` -> ``--video=-5KQ66BBWC4`` (a value that is not itself an option of bmvit)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if a in _VIDEO_ID_OPTIONS and nxt is not None and nxt.startswith("-") and not nxt.startswith("--"):
            out.append(f"{a}={nxt}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _message(e: BmvitError) -> str:
    """The error's own line. An error raised in a DataLoader worker comes back wrapped by torch
    ("Caught DataError in DataLoader worker process 0. Original Traceback ...: <message>"): its
    last line, without the class name, is the message."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = text.strip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith(f"{type(e).__module__}.{type(e).__name__}: ") else last


def main(argv: list[str] | None = None) -> int:
    argv = _join_video_ids(sys.argv[1:] if argv is None else list(argv))
    parser = _Parser(prog="bmvit", description="Single-stage spatio-temporal action localization (BMViT).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    verb = next((a for a in argv if not a.startswith("-")), None)
    for name in ([verb] if verb in VERBS else VERBS):
        importlib.import_module(VERBS[name]).add_parser(sub)
    args, extra = parser.parse_known_args(argv)
    positional = any(a.dest == "overrides" and not a.option_strings for a in sub.choices[args.command]._actions)
    if extra and positional and all(_OVERRIDE.match(a) for a in extra):
        args.overrides += extra  # key=value words after an option that follows earlier ones (argparse
        # fills a positional list from one run of words only)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        keep_freed_memory()  # glibc: freed activations stay in the process (engine/host_memory.py)
        return int(args.func(args) or 0)
    except Interrupted as e:  # training checkpointed on SIGTERM / Ctrl-C (engine/stop.py)
        if int(os.environ.get("RANK", "0")) == 0:
            print(str(e), file=sys.stderr)
        return e.exit_code
    except BmvitError as e:
        if args.debug:
            raise
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
