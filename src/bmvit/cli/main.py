"""``bmvit`` command line: one module per verb, dispatched here.

Errors a user can cause print one line ``error: ...`` (exit status 2); ``--debug`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # don't spin-wait: keeps steps fast on a busy machine

from bmvit.errors import BmvitError  # noqa: E402


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line too: ``error: <prog>: <what>`` and how to get help, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    from bmvit.cli import benchmark, convert, detect, export, flops, show
    from bmvit.cli import eval as eval_cmd, eval_ava, eval_frame, eval_video, prepare, synth, train

    parser = _Parser(prog="bmvit", description="Single-stage spatio-temporal action localization (BMViT).")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (synth, train, eval_cmd, eval_ava, eval_frame, eval_video, convert, flops, benchmark, detect, export, show, prepare):
        module.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BmvitError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
