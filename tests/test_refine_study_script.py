"""bench/refine_study.py (the refinement-readings study): a tiny run, resume, the report."""

from __future__ import annotations

import numpy as np
import pytest

from fairesi.headmodel import HeadModel

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def study(bench_script):
    return bench_script("refine_study")


def test_variants_differ_only_in_their_reading(study):
    args = study.parse_args(["--out", "x"])
    base = study.variant_config(args, "literal", 0)
    assert base.data.protocol == "paper" and base.data.disjoint_centres is False
    assert base.redraw and base.data.n_sources == 2
    for name, overrides in study.VARIANTS.items():
        config = study.variant_config(args, name, 0)
        assert config.model_hyper == {"preset": "cpu", **overrides}
        assert config.replace(model_hyper=base.model_hyper, out_dir="y") == base.replace(
            out_dir="y"
        )
    with pytest.raises(SystemExit):
        study.parse_args(["--variants", "literal,bogus"])


def test_tiny_study_runs_resumes_and_reports(study, tmp_path, capsys):
    head = tmp_path / "toy120.h5"
    HeadModel.toy(n_regions=120).save(head)
    argv = [
        "--head-model", str(head), "--bank", "synthetic", "--n-times", "32",
        "--epoch-samples", "16", "--batch-size", "8", "--n-val", "8", "--n-eval", "8",
        "--preset", "tiny", "--threads", "1", "--variants", "literal,weights",
        "--seed", "0", "--seed", "1", "--no-progress", "--out", str(tmp_path / "s"),
    ]  # fmt: skip
    assert study.main([*argv, "--steps", "2"]) == 0
    report = (tmp_path / "s" / "study.md").read_text()
    assert "16 test samples per variant" in report  # 8 per seed, two seeds
    assert "| weights |" in report and "difference to literal" in report.lower()
    with np.load(tmp_path / "s" / "seed1" / "weights" / "eval.npz") as saved:
        assert saved["precision"].shape == (8,)
    capsys.readouterr()
    # A larger budget resumes every run from its last.pt.
    assert study.main([*argv, "--steps", "4"]) == 0
    assert "weights: resuming at step 2" in capsys.readouterr().out
