"""The ``fairesi`` command line.

Each subcommand lives in its own module of this package and exposes

``register(subparsers) -> None``
    adds its parser(s) to the ``argparse`` sub-parser action and sets ``func`` (a
    callable taking the parsed ``argparse.Namespace`` and returning an exit code).

Modules are discovered automatically, so adding a command never touches this file. A
module may also define ``PASS_THROUGH(argv: list[str]) -> int``: then ``fairesi NAME ARGS``
calls it with ARGS untouched, before any parsing (``infer`` hands every option, even
``--version``, to the C++ runner).
Errors a user can fix (bad file, bad value, a folder they may not write in) are raised as
``FairesiUserError`` or ``ValueError``/``FileNotFoundError``/``PermissionError`` and printed
as one line on stderr with exit code 2; anything else is a bug: its traceback, then a line
that says so and how to report it, exit code 1.
Before a command runs, the options every command spells the same are checked here: a
count (``--threads``, ``--batch-size``) must be >= 1, and the folder an output
(``--out``, ``-o/--output``, ``--plot``) goes to must be writable, and an output that
names a file must not be an existing folder, nor one that names a folder an existing file
(a command declares its folder outputs with ``set_defaults(output_kinds={DEST: 'folder'})``;
'any' accepts both), so such a mistake is refused before any work and leaves nothing
behind.

Layering: the top of the package; it may import every other part of ``fairesi`` (lazily,
inside each command's ``run``, so that ``fairesi --help`` stays fast) and nothing imports
it but ``fairesi.__main__``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


class FairesiUserError(Exception):
    """An error caused by the user's input, reported without a traceback."""


#: Options that count something (dest -> flag): 0 or less is refused before any work.
_COUNT_OPTIONS = {"threads": "--threads", "batch_size": "--batch-size"}
#: Options naming an output file or folder (dest -> flag): its folder must be writable.
_OUTPUT_OPTIONS = {"out": "--out", "out_dir": "--out", "output": "--output", "plot": "--plot"}


def check_common_options(args: argparse.Namespace) -> None:
    """Refuse, before a command does any work, a count option below 1, an output whose
    folder cannot be written in (read-only, not ours, or a file on the way) and an output
    that exists as the wrong kind (a folder where a file is written, or the reverse).

    Raises
    ------
    FairesiUserError
        One line naming the option, the value and what to do.
    """
    from pathlib import Path

    from fairesi.io import check_output_writable

    for dest, flag in _COUNT_OPTIONS.items():
        value = getattr(args, dest, None)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            raise FairesiUserError(f"{flag} must be >= 1, got {value}")
    kinds = getattr(args, "output_kinds", {})
    for dest, flag in _OUTPUT_OPTIONS.items():
        value = getattr(args, dest, None)
        if isinstance(value, (str, Path)) and str(value):
            try:
                check_output_writable(value)
            except ValueError as err:
                raise FairesiUserError(f"{flag}: {err}") from None
            kind = kinds.get(dest, "file")
            if kind == "file" and Path(value).is_dir():
                raise FairesiUserError(
                    f"{flag}: the output {value} is an existing folder; give the path of a "
                    "file (inside it or elsewhere)"
                )
            if kind == "folder" and Path(value).exists() and not Path(value).is_dir():
                raise FairesiUserError(
                    f"{flag}: the output {value} is an existing file; give the path of a "
                    "folder (new or existing)"
                )


def _command_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every discovered subcommand registered."""
    from fairesi import __version__

    parser = argparse.ArgumentParser(
        prog="fairesi",
        description="Deep-learning EEG/MEG source imaging: simulate paired data with a "
        "Jansen-Rit network, train FAIR-ESI and baselines, evaluate, export.",
    )
    parser.add_argument("--version", action="version", version=f"fairesi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fairesi`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _command_modules():
        module = importlib.import_module(f"{__name__}.{argv[0]}")
        if hasattr(module, "PASS_THROUGH"):
            return int(module.PASS_THROUGH(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_common_options(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:  # Ctrl-C, or fairesi.train.Terminated on SIGTERM
        return _stopped(args.command, err)
    except Exception as err:
        signal_error = _interruption(err)
        if signal_error is not None:
            return _stopped(args.command, signal_error)
        if isinstance(err, _USER_ERRORS):
            print(f"fairesi {args.command}: error: {err}", file=sys.stderr)
            return 2
        import traceback

        from fairesi import __version__

        traceback.print_exc()
        print(
            f"fairesi {args.command}: internal error (a bug in fairesi {__version__}, not in "
            "your input); please report it to the fairesi developers with the command line "
            "and the traceback above",
            file=sys.stderr,
        )
        return 1


#: Errors a user can fix: one line, exit 2.
_USER_ERRORS = (FairesiUserError, ValueError, FileNotFoundError, FileExistsError, PermissionError)


def _interruption(err: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C / SIGTERM behind ``err``, if a signal's exception surfaced as another
    error: raised inside a C callback (h5py iterating attributes), it comes out as that
    library's ``SystemError`` or ``RuntimeError`` with the signal's exception as cause."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, KeyboardInterrupt):
            return err
        err = err.__cause__ or err.__context__
    return None


def _stopped(command: str, err: KeyboardInterrupt) -> int:
    """Report a Ctrl-C (exit 130) or SIGTERM (143) on one line; return its exit code."""
    code = getattr(err, "exit_code", 130)
    what = "interrupted" if code == 130 else "terminated"
    print(f"fairesi {command}: {what}; finished work was kept", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
