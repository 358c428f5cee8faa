"""``fairesi infer`` and the ``fairesi-infer`` console script: run the C++ runner.

Both hand their arguments unchanged to the ``fairesi-infer`` executable installed in the
package (``fairesi.export.runner_path()``), which needs no Python; acquisition software
calls that executable directly. See ``fairesi-infer --help``.
"""

from __future__ import annotations

import argparse
import os
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``infer`` subcommand."""
    parser = subparsers.add_parser(
        "infer",
        help="source estimate of a .npy epoch with an exported model (runs fairesi-infer)",
        description="Run the C++ runner fairesi-infer: MODEL INPUT.npy OUTPUT.npy [options]. "
        "All arguments are passed on; `fairesi infer --help` shows the runner's help.",
        add_help=False,
    )
    parser.add_argument(
        "-h", "--help", nargs=0, action=_RunnerHelp, help="show fairesi-infer's help and exit"
    )
    parser.add_argument(
        "runner_args",
        nargs=argparse.REMAINDER,
        help="arguments of fairesi-infer (MODEL INPUT.npy OUTPUT.npy [--batch] [--timing] ...)",
    )
    parser.set_defaults(func=lambda args: _exec_runner(args.runner_args))


class _RunnerHelp(argparse.Action):
    """``fairesi infer --help`` shows the runner's own help (it documents every option)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _exec_runner(["--help"])


def _exec_runner(runner_args: list[str]) -> int:
    from fairesi.export import runner_path

    path = runner_path()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(path, [str(path), *runner_args])
    return 1  # not reached: execv replaces this process


def main() -> int:
    """Entry point of the ``fairesi-infer`` console script."""
    try:
        return _exec_runner(sys.argv[1:])
    except FileNotFoundError as err:
        print(f"fairesi-infer: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
