"""``fairesi infer``: run the C++ runner ``fairesi-infer`` (see :mod:`fairesi.runner`).

All arguments go to the runner unchanged (``PASS_THROUGH``, before any argparse parsing, so
options such as ``--version`` reach it too); ``fairesi infer --help`` shows its help. The
parser registered here only lists the command in ``fairesi --help``.
"""

from __future__ import annotations

import argparse

from fairesi import runner


def PASS_THROUGH(argv: list[str]) -> int:  # noqa: N802 - the hook name of fairesi.cli
    """Run ``fairesi-infer argv...`` in place of this process (see ``fairesi.runner.main``)."""
    return runner.main(argv)


def register(subparsers: argparse._SubParsersAction) -> None:
    """List the ``infer`` subcommand (its arguments never reach argparse: ``PASS_THROUGH``)."""
    parser = subparsers.add_parser(
        "infer",
        help="source estimate of a .npy epoch with an exported model (runs fairesi-infer)",
        description="Run the C++ runner fairesi-infer: MODEL INPUT.npy OUTPUT.npy [options]. "
        "All arguments are passed on; `fairesi infer --help` shows the runner's help.",
        add_help=False,
    )
    parser.set_defaults(func=lambda args: PASS_THROUGH([]))
