"""bench/ablation.py (paper Table IV ablation): options, a tiny run, resume and refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fairesi.headmodel import HeadModel


@pytest.fixture(scope="module")
def ablation(bench_script):
    return bench_script("ablation")


@pytest.fixture(scope="module")
def head_model_file(tmp_path_factory) -> str:
    # The 50-region toy model cannot hold two non-touching 2-ring patches per split.
    path = tmp_path_factory.mktemp("head") / "toy120.h5"
    HeadModel.toy(n_regions=120).save(path)
    return str(path)


def _argv(out: Path, head_model: str, steps: int, *extra: str) -> list[str]:
    return [
        "--steps", str(steps), "--batch-size", "4", "--n-times", "32", "--n-eval", "8",
        "--head-model", head_model, "--bank", "synthetic", "--threads", "1",
        "--variants", "all,none", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_help_lists_the_options(ablation, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ablation.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--steps", "--batch-size", "--preset", "--hyper", "--n-times", "--threads",
                   "--out", "--n-eval", "--bank", "--head-model"):  # fmt: skip
        assert option in text


def test_bad_options_are_refused(ablation):
    with pytest.raises(SystemExit):
        ablation.parse_args(["--variants", "spectral,bogus"])
    with pytest.raises(SystemExit):
        ablation.parse_args(["--hyper", "spectral=False"])


def test_variants_differ_only_in_the_switches(ablation):
    args = ablation.parse_args(["--out", "x"])
    switches = ("spectral", "temporal", "patchwise")
    common = []
    for name, views in ablation.VARIANTS.items():
        config = ablation.variant_config(args, name).to_dict()
        assert config["run"].pop("out_dir") == str(Path("x") / name)
        assert tuple(config["model_hyper"].pop(key) for key in switches) == views
        common.append(config)
    assert all(config == common[0] for config in common)


def test_run_resume_and_refusal(ablation, head_model_file, tmp_path, capsys):
    out = tmp_path / "abl"
    assert ablation.main(_argv(out, head_model_file, 1)) == 0
    first = capsys.readouterr().out
    assert "[none] training 1 steps" in first and "[all] training 1 steps" in first
    # Rows in the paper's order, ours then the paper's, plus the all-zero reference.
    rows = [line.split(" | ")[0] for line in first.splitlines() if line.startswith("| ")]
    assert rows[1:6] == ["| none (-/-/-)", "| none (-/-/-)", "| all (✓/✓/✓)", "| all (✓/✓/✓)",
                         "| all-zero estimate"]  # fmt: skip
    assert "88.30 ± 12.15" in first  # the paper's Table IV precision of 'all'
    summary = json.loads((out / "ablation.json").read_text())["summary"]
    # The all-zero estimate reconstructs nothing: precision and recall are 0 by definition.
    assert summary["zero"]["precision"][:2] == [0.0, 0.0]
    assert summary["zero"]["recall"][:2] == [0.0, 0.0]
    with np.load(out / "all" / "eval.npz") as saved:
        assert int(saved["steps"]) == 1 and saved["precision"].shape == (8,)

    # A larger budget resumes both variants from last.pt; the same budget skips them.
    assert ablation.main(_argv(out, head_model_file, 2)) == 0
    assert "[all] resuming from step 1" in capsys.readouterr().out
    assert ablation.main(_argv(out, head_model_file, 2)) == 0
    assert "[none] already trained (2 steps)" in capsys.readouterr().out
    with np.load(out / "none" / "eval.npz") as saved:
        assert int(saved["steps"]) == 2

    with pytest.raises(ValueError, match="other settings"):
        ablation.main(_argv(out, head_model_file, 2, "--lr", "0.01"))
