"""Parameter checks shared by the package (in the style of MNE's ``_validate_type`` and
``_check_option``).

Every check returns the value it accepted, so it can be used inline, and raises with one
line that names the parameter, shows the value and says what was expected::

    check_option("norm", "x", ("position", "all"))
    # ValueError: unknown norm 'x'; expected one of ['position', 'all']
    check_positive_int("FairEsiConfig.n_blocks", 0)
    # ValueError: FairEsiConfig.n_blocks must be a positive int, got 0

:func:`check_type` raises ``TypeError``. The value checks (:func:`check_option`,
:func:`check_int`, :func:`check_positive_int`, :func:`check_positive`, :func:`check_range`)
raise ``ValueError`` also for a value of the wrong type, since to whoever wrote it (a JSON
config, a ``--hyper`` on the command line) it is a bad value like any other; the CLI
reports ``ValueError`` as a one-line user error. ``bool`` is never accepted as a number.

This module is a leaf: it imports nothing from fairesi, so every layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Real
from typing import Any, TypeVar

__all__ = [
    "check_int",
    "check_keys",
    "check_option",
    "check_positive",
    "check_positive_int",
    "check_range",
    "check_type",
    "UnknownKeyError",
]

T = TypeVar("T")


def _type_names(types: type | tuple[type, ...]) -> str:
    names = [
        "None" if t is type(None) else t.__name__
        for t in (types if isinstance(types, tuple) else (types,))
    ]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_type(name: str, value: T, types: type | tuple[type, ...]) -> T:
    """Check that ``value`` is an instance of ``types`` (``type(None)`` allows None).

    Raises
    ------
    TypeError
        ``"{name} must be {types}, got {value!r} ({type})"``.
    """
    if not isinstance(value, types):
        raise TypeError(
            f"{name} must be {_type_names(types)}, got {value!r} ({type(value).__name__})"
        )
    return value


def check_option(name: str, value: T, allowed: Iterable[Any]) -> T:
    """Check that ``value`` is one of ``allowed`` (listed in the given order).

    Raises
    ------
    ValueError
        ``"unknown {name} {value!r}; expected one of [...]"``.
    """
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
    return value


class UnknownKeyError(TypeError, ValueError):
    """Unknown keys in a mapping of settings: a ``TypeError`` like an unexpected keyword
    argument, and a ``ValueError`` so that the command line reports it as a user error
    (one line, exit 2) when the keys came from the user (``--hyper``, a TOML table)."""


def check_keys(name: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Check that every key of ``given`` is in ``allowed`` (like unexpected keyword arguments).

    Raises
    ------
    UnknownKeyError
        A ``TypeError`` (and ``ValueError``): ``"unknown {name} [...]; expected some of
        [...]"`` with the unknown keys, sorted.
    """
    allowed = set(allowed)
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise UnknownKeyError(f"unknown {name} {unknown}; expected some of {sorted(allowed)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(
    name: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    odd: bool = False,
    allow_none: bool = False,
) -> Any:
    """Check that ``value`` is an ``int`` (not a bool) within bounds, optionally odd.

    Parameters
    ----------
    name : str
        Parameter name for the message (e.g. ``'ConvDipConfig.grid_size'``).
    value
        The value to check.
    minimum, maximum : int | None
        Inclusive bounds; None: unbounded.
    odd : bool
        Require an odd value.
    allow_none : bool
        Accept None too.

    Raises
    ------
    ValueError
        ``"{name} must be an [odd] int [>= minimum] [<= maximum] [or None], got {value!r}"``.
    """
    if value is None and allow_none:
        return value
    if (
        not _is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (odd and value % 2 != 1)
    ):
        bounds = [f">= {minimum}"] if minimum is not None else []
        bounds += [f"<= {maximum}"] if maximum is not None else []
        expected = " ".join(["an odd int" if odd else "an int", " and ".join(bounds)]).strip()
        raise ValueError(
            f"{name} must be {expected}{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def check_positive_int(name: str, value: Any, *, odd: bool = False, allow_none: bool = False):
    """Check that ``value`` is an ``int`` >= 1 (not a bool), optionally odd, or None.

    Raises
    ------
    ValueError
        ``"{name} must be a positive int, got {value!r}"`` (``"a positive odd int"``,
        ``"... or None"``).
    """
    if value is None and allow_none:
        return value
    if not _is_int(value) or value < 1 or (odd and value % 2 != 1):
        expected = "a positive odd int" if odd else "a positive int"
        raise ValueError(
            f"{name} must be {expected}{' or None' if allow_none else ''}, got {value!r}"
        )
    return value


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> Any:
    """Check that ``value`` is a real number > 0 (not NaN, not a bool).

    Raises
    ------
    ValueError
        ``"{name} must be > 0, got {value!r}"``.
    """
    if not (_is_real(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def check_range(name: str, value: Any, low: float, high: float) -> Any:
    """Check that ``value`` is a real number in the closed interval ``[low, high]``.

    Raises
    ------
    ValueError
        ``"{name} must be in [low, high], got {value!r}"`` (also for NaN and non-numbers).
    """
    if not (_is_real(value) and not math.isnan(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return value
