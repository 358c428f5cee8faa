"""The parameter checks of fairesi._validate: what they accept, and one-line messages that
name the parameter, show the value and say what was expected."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fairesi._validate import (
    check_int,
    check_keys,
    check_option,
    check_positive,
    check_positive_int,
    check_range,
    check_type,
)


def _one_line(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_check_type():
    assert check_type("path", "a.h5", str) == "a.h5"
    assert check_type("seed", None, (int, type(None))) is None
    with pytest.raises(TypeError) as excinfo:
        check_type("seed", "3", (int, type(None)))
    assert _one_line(excinfo) == "seed must be int or None, got '3' (str)"
    with pytest.raises(TypeError, match=r"^x must be int, float or str, got \[\] \(list\)$"):
        check_type("x", [], (int, float, str))


def test_check_option():
    assert check_option("norm", "all", ("position", "all")) == "all"
    assert check_option("axis", "patches", {"samples": -1, "patches": -2}) == "patches"
    with pytest.raises(ValueError) as excinfo:
        check_option("norm", "x", ("position", "all"))
    assert _one_line(excinfo) == "unknown norm 'x'; expected one of ['position', 'all']"
    with pytest.raises(ValueError, match=r"unknown axis 'time'; expected one of \['samples'\]"):
        check_option("axis", "time", {"samples": -1})


def test_check_keys():
    check_keys("hyper-parameters", {"a": 1}, ["a", "b"])
    check_keys("hyper-parameters", [], ["a"])
    with pytest.raises(TypeError) as excinfo:
        check_keys("FAIR-ESI hyper-parameters", {"z": 1, "c": 2, "a": 3}, ["b", "a"])
    assert _one_line(excinfo) == (
        "unknown FAIR-ESI hyper-parameters ['c', 'z']; expected some of ['a', 'b']"
    )


@pytest.mark.parametrize("value", [1, 5, 10**9])
def test_check_positive_int_accepts(value):
    assert check_positive_int("n", value) == value


@pytest.mark.parametrize("value", [0, -3, 2.0, True, False, "3", None, np.int64(3)])
def test_check_positive_int_refuses(value):
    with pytest.raises(ValueError) as excinfo:
        check_positive_int("Cfg.n_blocks", value)
    assert _one_line(excinfo) == f"Cfg.n_blocks must be a positive int, got {value!r}"


def test_check_positive_int_odd_and_none():
    assert check_positive_int("k", None, allow_none=True) is None
    assert check_positive_int("k", 3, odd=True) == 3
    with pytest.raises(ValueError, match=r"^k must be a positive odd int, got 4$"):
        check_positive_int("k", 4, odd=True)
    with pytest.raises(ValueError, match=r"^k must be a positive int or None, got 0$"):
        check_positive_int("k", 0, allow_none=True)
    with pytest.raises(ValueError, match="positive int, got None"):
        check_positive_int("k", None)


def test_check_int():
    assert check_int("g", -4) == -4
    assert check_int("g", 3, minimum=3, maximum=3) == 3
    assert check_int("g", None, minimum=3, allow_none=True) is None
    with pytest.raises(ValueError) as excinfo:
        check_int("ConvDipConfig.grid_size", 2, minimum=3, allow_none=True)
    assert _one_line(excinfo) == "ConvDipConfig.grid_size must be an int >= 3 or None, got 2"
    with pytest.raises(ValueError, match=r"^g must be an int >= 0 and <= 9, got 10$"):
        check_int("g", 10, minimum=0, maximum=9)
    with pytest.raises(ValueError, match=r"^g must be an odd int >= 1, got 2$"):
        check_int("g", 2, minimum=1, odd=True)
    with pytest.raises(ValueError, match=r"^g must be an int, got 1.5$"):
        check_int("g", 1.5)
    with pytest.raises(ValueError, match=r"^g must be an int, got True$"):
        check_int("g", True)


@pytest.mark.parametrize("value", [0.1, 3, math.inf, np.float32(0.5)])
def test_check_positive_accepts(value):
    assert check_positive("tau", value) == value


@pytest.mark.parametrize("value", [0.0, -1, math.nan, True, "1", None])
def test_check_positive_refuses(value):
    with pytest.raises(ValueError) as excinfo:
        check_positive("tau", value)
    assert _one_line(excinfo) == f"tau must be > 0, got {value!r}"


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_check_range_accepts(value):
    assert check_range("alpha", value, 0.0, 1.0) == value


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf, False, "0.5", None])
def test_check_range_refuses(value):
    with pytest.raises(ValueError) as excinfo:
        check_range("alpha", value, 0.0, 1.0)
    assert _one_line(excinfo) == f"alpha must be in [0, 1], got {value!r}"
    with pytest.raises(ValueError, match=r"must be in \[-2.5, 1e\+06\]"):
        check_range("x", 2e6, -2.5, 1e6)
