"""The README's Python blocks run as written (in a fresh namespace each, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_blocks():
    assert python_blocks()


@pytest.mark.filterwarnings("ignore:using the analytic stand-in")
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {}
    try:
        exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    if "estimate" in namespace:  # the API tour ends with a network's estimate
        assert namespace["estimate"].shape == (8, 994, 500)
