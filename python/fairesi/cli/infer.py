"""``fairesi infer``: run the C++ runner ``fairesi-infer`` (see :mod:`fairesi.runner`).

All arguments go to the runner unchanged; ``fairesi infer --help`` shows its help.
"""

from __future__ import annotations

import argparse

from fairesi.runner import exec_runner


class _RunnerHelp(argparse.Action):
    """``fairesi infer --help`` shows the runner's own help (it documents every option)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        exec_runner(["--help"])


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
    parser.set_defaults(func=lambda args: exec_runner(args.runner_args))
