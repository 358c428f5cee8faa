"""bench/key_patch_agreement.py: the key-patch index and a dry run of the table."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def script(bench_script):
    return bench_script("key_patch_agreement")


def test_key_patch_index_is_the_largest_energy_patch(script):
    patches = torch.zeros(1, 2, 3, 2)
    patches[0, 0, 1] = torch.tensor([-3.0, 0.0])  # energy 9
    patches[0, 0, 2] = torch.tensor([2.0, 2.0])  # energy 8
    patches[0, 1, 2] = torch.tensor([0.0, 1.0])
    assert script.key_patch_index(patches).tolist() == [[1, 2]]


def test_an_order_keeping_refinement_agrees_everywhere(script, monkeypatch):
    shares = script.agreement(torch.randn(3, 20, 64))
    assert set(shares) == {(v, r) for v in script.VIEWS for r in ("literal", "residual")}
    assert all(0.0 <= a <= 1.0 and 0.0 <= b <= 1.0 for a, b in shares.values())
    # A refinement that scales the patches keeps every energy order: 100% agreement.
    monkeypatch.setattr(script, "make_refine", lambda **_: lambda p: 3.0 * p)
    assert set(script.agreement(torch.randn(3, 20, 64)).values()) == {(1.0, 1.0)}


def test_the_table_prints(script, capsys):
    argv = ["--n", "4", "--n-times", "64", "--n-sources", "1", "--n-rings", "1"]
    script.main([*argv, "--head-model", "toy", "--bank", "synthetic"])
    out = capsys.readouterr().out
    assert "chance 14.3%" in out and out.count("| temporal |") == 2
