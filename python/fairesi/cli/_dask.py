"""``--dask`` and ``--dask-timeout`` for ``fairesi simulate bank`` and ``fairesi simulate
dataset``: the options, and the client they ask for (:func:`fairesi.cluster.connect`),
with every cluster problem reported as one :class:`~fairesi.cli.FairesiUserError` line.

(The leading underscore keeps the CLI discovery from registering it as a command.)
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fairesi.cli import FairesiUserError

_DEFAULT_TIMEOUT_S = 15.0  # fairesi.cluster.DEFAULT_TIMEOUT_S, without importing it here


def add_dask_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--dask SCHEDULER|local:N`` and ``--dask-timeout S`` to ``parser``."""
    parser.add_argument(
        "--dask",
        metavar="SCHEDULER|local:N",
        default=None,
        help=f"{what} as tasks of a Dask cluster: a scheduler address (tcp://HOST:8786) "
        "or local:N for N worker processes on this machine; needs fairesi[dask] and the "
        "same fairesi version on every worker (default: local threads)",
    )
    parser.add_argument(
        "--dask-timeout",
        type=float,
        default=_DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds allowed to reach the Dask scheduler and see a worker "
        f"(default: {_DEFAULT_TIMEOUT_S:g})",
    )


@contextmanager
def dask_client(args: argparse.Namespace) -> Iterator[Any]:
    """The Dask client asked for by ``--dask`` (None without it), for a ``with`` block;
    a :class:`fairesi.cluster.ClusterError` inside the block becomes a one-line error."""
    if args.dask is None:
        yield None
        return
    from fairesi.cluster import ClusterError, connect

    try:
        with connect(args.dask, timeout_s=args.dask_timeout) as client:
            yield client
    except ClusterError as err:
        raise FairesiUserError(str(err)) from None
