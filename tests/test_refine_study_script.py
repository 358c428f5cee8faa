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


def tiny_argv(tmp_path) -> list[str]:
    """Options of a study on a 120-region toy head, 32-sample trials, epochs of 2 steps."""
    head = tmp_path / "toy120.h5"
    HeadModel.toy(n_regions=120).save(head)
    return [
        "--head-model", str(head), "--bank", "synthetic", "--n-times", "32",
        "--epoch-samples", "16", "--batch-size", "8", "--n-val", "8", "--n-eval", "8",
        "--preset", "tiny", "--threads", "1", "--no-progress",
    ]  # fmt: skip


def test_tiny_study_runs_resumes_and_reports(study, tmp_path, capsys):
    argv = [
        *tiny_argv(tmp_path), "--variants", "literal,weights", "--seed", "0", "--seed", "1",
        "--out", str(tmp_path / "s"),
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


def test_flattened_compares_the_window_with_the_rest(study):
    lr0 = 1e-3
    curve = [(500, 300.0, 314.0, lr0), (1000, 250.0, 314.0, lr0), (1500, 200.0, 314.0, lr0 / 2)]
    # Too short: the curve spans 1,000 steps, the window is 1,000.
    assert not study.flattened(curve[:2], window=1000, tol=0.02, lr0=lr0)
    # Last 1,000 steps (epochs at 1,000 and 1,500) gained 20% over the best before: not flat.
    assert not study.flattened(curve, window=1000, tol=0.02, lr0=lr0)
    flat = [*curve, (2000, 199.0, 314.0, lr0 / 2), (2500, 201.0, 314.0, lr0 / 2)]
    # Window 1,000 (steps 2,000 and 2,500, the rate halved at 1,500): best 199 against 200
    # before it, a 0.5% gain: flat at 2%, not at 0.1%.
    assert study.flattened(flat, window=1000, tol=0.02, lr0=lr0)
    assert not study.flattened(flat, window=1000, tol=0.001, lr0=lr0)
    # A window that reaches back into the steep part is not flat.
    assert not study.flattened(flat, window=2000, tol=0.02, lr0=lr0)
    # The same losses at the first learning rate throughout: a plateau the schedule has not
    # answered yet, so not flat.
    at_lr0 = [(step, v, zero, lr0) for step, v, zero, _ in flat]
    assert not study.flattened(at_lr0, window=1000, tol=0.02, lr0=lr0)


def test_until_flat_trains_in_chunks_and_reports_why_it_stopped(
    study, tmp_path, capsys, monkeypatch
):
    argv = [*tiny_argv(tmp_path), "--variants", "literal", "--chunk", "2", "--until-flat", "4"]
    # Epochs of 2 steps; a stand-in criterion (the real one is tested above) calls a curve
    # flat once it spans the window: epochs at steps 2, 4, 6, so the run stops at step 6.
    calls = []

    def spans_window(curve, window, tol, lr0):
        calls.append((window, tol, lr0))
        return curve[-1][0] - curve[0][0] >= window

    monkeypatch.setattr(study, "flattened", spans_window)
    assert study.main([*argv, "--out", str(tmp_path / "s"), "--flat-tol", "0.99"]) == 0
    assert calls[0] == (4, 0.99, 1e-3)
    out = capsys.readouterr().out
    assert "literal: resuming at step 2" in out and "resuming at step 4" in out
    assert "literal: done at step 6: flat" in out
    assert "stopped at step 6: flat" in (tmp_path / "s" / "study.md").read_text()
    assert (tmp_path / "s" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # A run that has not flattened is done at the cap (no training: the run has 6 steps).
    monkeypatch.setattr(study, "flattened", lambda *args: False)
    tight = [*argv, "--out", str(tmp_path / "s"), "--steps", "6"]
    assert study.main([*tight, "--report-only"]) == 0
    assert "stopped at step 6: cap of 6 steps" in (tmp_path / "s" / "study.md").read_text()
    with pytest.raises(SystemExit):
        study.parse_args(["--flat-tol", "1.5"])


def test_bf16_reaches_new_and_resumed_runs(study, tmp_path, monkeypatch):
    args = study.parse_args([*tiny_argv(tmp_path), "--out", str(tmp_path / "s"), "--bf16"])
    assert study.variant_config(args, "literal", 0).run.cpu_bf16
    assert not study.variant_config(study.parse_args([]), "literal", 0).run.cpu_bf16
    # Resuming a run that began in float32 switches it to bfloat16 (a checkpoint setting
    # that may change on resume); without --bf16 the resumed run keeps its own.
    calls = []
    monkeypatch.setattr(study, "run_state", lambda a, d: (2, None) if not calls else (4, "cap"))
    monkeypatch.setattr(study, "train", lambda config=None, **kw: calls.append(kw))
    study.train_variant(args, "literal", 0)
    assert calls[0]["cpu_bf16"] is True and calls[0]["max_steps"] == 3000
    calls.clear()
    args.bf16 = False
    study.train_variant(args, "literal", 0)
    assert "cpu_bf16" not in calls[0]


def test_anneal_steps_fix_the_schedule_of_every_variant(study):
    args = study.parse_args(["--out", "x", "--steps", "24000", "--anneal-steps", "8000"])
    for name in ("literal", "t4-none"):
        config = study.variant_config(args, name, 1)
        assert config.run.anneal_steps == 8000 and config.run.max_steps == 24000
        assert config.optim.lr_patience > 24000 // 500  # no halving within the run
    plateau = study.variant_config(study.parse_args(["--out", "x"]), "literal", 1)
    assert plateau.run.anneal_steps is None and plateau.optim.lr_patience == 2
    for bad in (["--until-flat", "3000"], ["--steps", "100"]):
        with pytest.raises(SystemExit):
            study.parse_args(["--anneal-steps", "8000", *bad])


def test_tiny_fixed_schedule_decays_the_rate(study, tmp_path):
    argv = [*tiny_argv(tmp_path), "--variants", "literal", "--out", str(tmp_path / "s")]
    assert study.main([*argv, "--steps", "6", "--anneal-steps", "4"]) == 0
    rows = study.log_rows(tmp_path / "s" / "seed0" / "literal")
    rates = [float(r["lr"]) for r in rows if r["kind"] == "epoch"]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] < rates[1] < 1e-3
    assert "fixed schedule" in (tmp_path / "s" / "study.md").read_text()
