"""The ``mupd`` command line: thin front ends over the Qt-free core.

Every :class:`~napari_mupd.errors.MuPDError` ends a command with ``mupd: error: <message>``
on stderr and exit status 2 (argparse's status for a usage error), without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from napari_mupd._version import __version__
from napari_mupd.errors import MuPDError

#: Exit status of a command stopped by a user-caused error (as argparse's usage errors).
EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``mupd`` argument parser with every subcommand."""
    from napari_mupd.cli import evaluate, export, generate, slides, stain, train

    parser = argparse.ArgumentParser(prog="mupd", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--version", action="version", version=f"napari-mupd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    slides.add_commands(sub)
    stain.add_commands(sub)
    generate.add_commands(sub)
    export.add_commands(sub)
    evaluate.add_commands(sub)
    train.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mupd`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MuPDError as exc:
        print(f"mupd: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("mupd: interrupted", file=sys.stderr)
        return 130
