"""Dask plumbing shared by the parallel bank build and dataset writer (``--dask``).

- :func:`connect`: a ``dask.distributed.Client`` for ``"local:N"`` (a ``LocalCluster`` of
  N one-thread worker processes on this machine) or a scheduler address, with a bounded
  connection time and the workers' ``fairesi`` version checked against this one;
- :func:`check_workers`: that check on its own (for a client made elsewhere);
- :func:`map_unordered`: submit one task per item and yield the results as they finish,
  each exactly once; a task whose worker dies is run again by Dask on another worker.

``dask`` and ``distributed`` are optional (``pip install fairesi[dask]``) and imported
only inside these functions; :class:`ClusterError` reports every problem a user can fix
(missing package, unreachable scheduler, no workers, other versions) in one line.

Layering: like :mod:`fairesi.io`, this module imports nothing of ``fairesi`` but
``fairesi.__version__``; :mod:`fairesi.simulate`, :mod:`fairesi.data` and the CLI use it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ClusterError", "check_workers", "connect", "map_unordered"]

#: Seconds allowed to reach a scheduler and to see its first worker.
DEFAULT_TIMEOUT_S = 15.0


class ClusterError(RuntimeError):
    """A Dask cluster cannot be used (one line, fixable by the user)."""


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ClusterError(
            "--dask needs the dask and distributed packages: pip install 'fairesi[dask]'"
        ) from None
    return distributed


def _worker_version() -> str:
    """Run on a worker by :func:`check_workers`: the ``fairesi`` version it imports."""
    import fairesi

    return str(fairesi.__version__)


@contextmanager
def connect(spec: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Any]:
    """Connect to a Dask cluster for the duration of a ``with`` block.

    Parameters
    ----------
    spec : str
        ``"local:N"`` starts a ``LocalCluster`` of N worker processes with one thread
        each (closed again at the end of the block); anything else is the address of a
        running scheduler, e.g. ``"tcp://10.0.0.5:8786"``.
    timeout_s : float
        Seconds allowed to reach the scheduler and again to see at least one worker.

    Yields
    ------
    client : dask.distributed.Client
        Its workers all run the same ``fairesi`` version as this process.

    Raises
    ------
    ClusterError
        dask is not installed, ``spec`` is malformed, the scheduler cannot be reached or
        has no worker within ``timeout_s``, or a worker runs another ``fairesi`` version.
        Nothing has been submitted then.
    """
    distributed = _import_distributed()
    if not timeout_s > 0:
        raise ClusterError(f"the Dask timeout must be > 0 s, got {timeout_s}")
    cluster = None
    if spec.startswith("local:"):
        count = spec.partition(":")[2]
        if not count.isdigit() or int(count) < 1:
            raise ClusterError(f"--dask {spec!r}: expected local:N with N >= 1 worker processes")
        try:
            cluster = distributed.LocalCluster(
                n_workers=int(count),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
            client = distributed.Client(cluster, timeout=timeout_s)
        except Exception as err:
            if cluster is not None:
                cluster.close()
            raise ClusterError(f"cannot start a local Dask cluster ({spec}): {err}") from None
    else:
        if not spec or any(c.isspace() for c in spec):
            raise ClusterError(f"--dask {spec!r}: expected a scheduler address or local:N")
        try:
            client = distributed.Client(spec, timeout=timeout_s)
        except (OSError, TimeoutError) as err:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {spec} within {timeout_s:g} s ({err})"
            ) from None
        except Exception as err:  # something answered, but not a Dask scheduler
            raise ClusterError(
                f"cannot connect to a Dask scheduler at {spec}: {type(err).__name__}: {err}"
            ) from None
    try:
        check_workers(client, timeout_s=timeout_s)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def check_workers(client: Any, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, str]:
    """Wait for a worker and refuse workers whose ``fairesi`` differs from this one.

    Parameters
    ----------
    client : dask.distributed.Client
    timeout_s : float
        Seconds to wait for the first worker.

    Returns
    -------
    versions : dict of str to str
        ``fairesi.__version__`` of every worker, by worker address.

    Raises
    ------
    ClusterError
        No worker within ``timeout_s``, a worker cannot import ``fairesi``, or one runs
        another version (their addresses and versions are named).
    """
    import fairesi

    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (TimeoutError, OSError):
        raise ClusterError(
            f"the Dask scheduler {client.scheduler.address} has no worker after {timeout_s:g} s"
        ) from None
    try:
        versions = client.run(_worker_version)
    except ImportError as err:
        raise ClusterError(f"a Dask worker cannot import fairesi: {err}") from None
    other = {w: v for w, v in sorted(versions.items()) if v != fairesi.__version__}
    if other:
        listed = ", ".join(f"{w} has {v}" for w, v in other.items())
        raise ClusterError(
            f"Dask workers run another fairesi version than this process "
            f"({fairesi.__version__}): {listed}; install the same version on every worker"
        )
    return versions


def map_unordered(
    client: Any,
    fn: Callable[..., Any],
    items: Iterable[tuple[Any, tuple]],
    *,
    shared: Any = None,
    name: str = "fairesi",
) -> Iterator[tuple[Any, Any]]:
    """Run ``fn(shared, *args)`` (or ``fn(*args)``) as one Dask task per item.

    ``shared`` (e.g. the network of a bank build) is sent to every worker once, not with
    every task. Results come back to this process as tasks finish, in any order; each
    item's result is yielded exactly once, even when a worker died and Dask ran its
    tasks again elsewhere. Closing the generator early (an error, Ctrl-C) cancels the
    tasks not yet finished.

    Parameters
    ----------
    client : dask.distributed.Client
    fn : callable
        A module-level function (workers import it by name), pure in its arguments.
    items : iterable of (tag, args)
        ``tag`` is handed back with the result; ``args`` is the tuple of arguments.
    shared : object, optional
        First argument of every call; broadcast to all workers once.
    name : str
        Prefix of the task keys (shown on the Dask dashboard).

    Yields
    ------
    (tag, result)
        One per item.

    Raises
    ------
    ClusterError
        A task failed on workers that died ``distributed.scheduler.allowed-failures``
        times (``KilledWorker``). An exception raised by ``fn`` itself is re-raised.
    """
    distributed = _import_distributed()
    token = uuid.uuid4().hex[:8]
    head = ()
    if shared is not None:
        head = (client.scatter(shared, broadcast=True, hash=False),)
    futures = {}
    for i, (tag, args) in enumerate(items):
        future = client.submit(fn, *head, *args, key=f"{name}-{token}-{i}", pure=False)
        futures[future] = tag
    done: set[str] = set()
    try:
        for future in distributed.as_completed(futures):
            if future.key in done:  # never expected; a result is used once
                continue
            try:
                result = future.result()
            except distributed.KilledWorker as err:
                raise ClusterError(
                    f"Dask task {futures[future]!r} was lost with its worker too many times "
                    f"({err}); the finished results are kept, run the command again"
                ) from None
            done.add(future.key)
            future.release()
            yield futures[future], result
    finally:
        pending = [f for f in futures if f.key not in done]
        if pending:
            client.cancel(pending)
