"""bench/compare_pretrained.py: two model files scored on the same fresh samples, paired."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fairesi.data import SimConfig
from fairesi.train import read_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


def pack(payload, directory, data=None):
    """Write ``payload``'s model as ``directory/toy.pt`` (float16, as pack_pretrained)."""
    directory.mkdir()
    torch.save(
        {
            "config": {**payload["config"], "data": data or payload["config"]["data"]},
            "state_dict": {k: v.half() for k, v in payload["state_dict"].items()},
            "card": {"name": "toy"},
        },
        directory / "toy.pt",
    )
    return directory


def test_same_model_twice_differs_by_nothing_and_other_samples_are_refused(
    bench_script, tiny_run, tmp_path, capsys
):
    compare = bench_script("compare_pretrained")
    payload = read_checkpoint(tiny_run / "best.pt")
    old, new = pack(payload, tmp_path / "old"), pack(payload, tmp_path / "new")
    argv = ["toy", "--old-dir", str(old), "--n", "4", "--bank", "synthetic", "--threads", "1"]
    assert compare.main([*argv, "--new-dir", str(new), "--config", "5/1/2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 5/1/2")]
    lines = lines[-6:]  # the final table (each difference is also printed as it comes)
    assert [ln.split(" | ")[1:3] for ln in lines] == [
        [p, m] for p in ("paper", "strict") for m in ("old", "new", "new − old")
    ]
    assert all(cell.strip() == "+0.00 ± 0.00" for cell in lines[2].split(" | ")[3:-1])
    # A model whose test samples would differ (another trial length) is not paired.
    data = SimConfig.from_dict(dict(payload["config"]["data"]))
    other = pack(payload, tmp_path / "other", dataclasses.replace(data, n_times=32).to_dict())
    with pytest.raises(SystemExit):
        compare.main([*argv, "--new-dir", str(other), "--config", "5/1/2"])
    assert "test samples differ" in capsys.readouterr().err
