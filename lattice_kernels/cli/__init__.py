"""The command-line tools (installed as lattice-upscale, lattice-denoise, lattice-train, ...).

Each command is a module `lattice_kernels/cli/<name>.py` with `build_parser() -> argparse.ArgumentParser`,
`run(args) -> int` and `main = command("lattice-<name>", build_parser, run)`. User errors are raised by the library
and the commands as ordinary exceptions with a clear message; `command` turns them into one line
`lattice-<name>: error: ...` on stderr and exit status 2 (`--debug` prints the traceback first). argparse's own
errors (a bad option) exit with status 2 too. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable

import torch

from .. import BackendUnavailableError
from .._build import ExtensionBuildError

# Errors that a user causes and can fix: a missing or unreadable file (OSError), a file or value that cannot be
# used (ValueError and the library's subclasses: ImageError, CheckpointError, DataError), a missing optional
# package (ImportError), a backend that is not there, an extension that cannot be built, the device running out of
# memory.
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, ImportError, BackendUnavailableError,
                                                ExtensionBuildError,
                                                getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's examples as written and shows the default of every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.required:
            return action.help
        return super()._get_help_string(action)


def one_line(e: BaseException) -> str:
    """The exception's message on one line: its lines joined by '; ' (or by a space after a line ending in ':')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    out = lines[0]
    for ln in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + ln
    return out


def command(prog: str, build_parser: Callable[[], argparse.ArgumentParser],
            run: Callable[[argparse.Namespace], int | None]) -> Callable[[list[str] | None], int]:
    """The `main(argv=None) -> int` of a command: parse argv (sys.argv[1:] by default) with build_parser()'s parser
    (named `prog`, with a --debug flag added), call run(args) and return its exit status; a user error (USER_ERRORS)
    becomes one line `prog: error: message` on stderr and status 2, Ctrl-C status 130."""

    def main(argv: list[str] | None = None) -> int:
        parser = build_parser()
        parser.prog = prog
        try:
            parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback")
        except argparse.ArgumentError:
            pass  # the command has its own --debug
        args = parser.parse_args(argv)
        try:
            return int(run(args) or 0)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except USER_ERRORS as e:
            if getattr(args, "debug", False):
                traceback.print_exc()
            print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
            return EXIT_USER_ERROR

    main.__doc__ = f"The {prog} command: main(argv=None) -> exit status."
    main.__qualname__ = main.__name__ = "main"
    return main
