"""bench/deepsif_compare.py (FAIR-ESI vs DeepSIF at equal size and time): a tiny run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fairesi.headmodel import HeadModel

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def compare(bench_script):
    return bench_script("deepsif_compare")


def test_runs_differ_only_in_network_and_lr(compare):
    args = compare.parse_args(["--out", "x"])
    fair = compare.run_config(args, "SimMEG", 0, "fair_esi", 1e-3)
    sif = compare.run_config(args, "SimMEG", 0, "deepsif", 1e-4)
    assert fair.data.protocol == "paper" and fair.data.disjoint_centres is False
    assert (fair.data.snr_db, fair.data.n_sources, fair.data.n_rings) == (5.0, 1, 2)
    assert fair.model_hyper == {"preset": "cpu"} and sif.model_hyper == {"preset": "matched"}
    assert sif.replace(model="fair_esi", lr=1e-3, out_dir="y") == fair.replace(
        model_hyper=sif.model_hyper, out_dir="y"
    )
    for bad in (["--networks", "fair_esi,bogus"], ["--lrs", "x"], ["--lrs", "0"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_bf16_trains_both_networks_under_bfloat16_autocast(compare):
    args = compare.parse_args(["--bf16"])
    for network in ("fair_esi", "deepsif"):
        assert compare.run_config(args, "SimMEG", 0, network, 1e-3).run.cpu_bf16
    assert not compare.run_config(
        compare.parse_args([]), "SimMEG", 0, "fair_esi", 1e-3
    ).run.cpu_bf16


def test_lr_patience_overrides_the_recipe_for_both_networks(compare):
    assert (
        compare.run_config(compare.parse_args([]), "SimMEG", 0, "deepsif", 1e-3).optim.lr_patience
        == 2
    )
    args = compare.parse_args(["--lr-patience", "6"])
    for network in ("fair_esi", "deepsif"):
        assert compare.run_config(args, "SimMEG", 0, network, 1e-3).optim.lr_patience == 6


def test_hyper_widens_fair_esi_only(compare):
    args = compare.parse_args(["--hyper", "gru_hidden=256", "--hyper", "norm='all'"])
    fair = compare.run_config(args, "SimMEG", 0, "fair_esi", 1e-3)
    sif = compare.run_config(args, "SimMEG", 0, "deepsif", 1e-3)
    assert fair.model_hyper == {"preset": "cpu", "gru_hidden": 256, "norm": "all"}
    assert sif.model_hyper == {"preset": "matched"}
    for bad in (["--hyper", "gru_hidden"], ["--hyper", "=3"], ["--hyper", "gru_hidden=wide"]):
        with pytest.raises(SystemExit):
            compare.parse_args(bad)


def test_size_wide_pairs_fair_esi_with_equal_size_and_equal_rank_deepsif(compare):
    args = compare.parse_args(["--size", "wide"])
    assert args.networks == ["fair_esi", "deepsif", "deepsif_rank"]
    hyper = {n: compare.run_config(args, "SimEEG", 1, n, 1e-3).model_hyper for n in args.networks}
    assert hyper == {
        "fair_esi": {"preset": "wide"},
        "deepsif": {"preset": "wide-matched"},
        "deepsif_rank": {"preset": "wide-rank"},
    }
    assert compare.run_config(args, "SimEEG", 1, "deepsif_rank", 1e-3).model == "deepsif"
    assert compare.parse_args([]).networks == ["fair_esi", "deepsif"]
    with pytest.raises(SystemExit):  # no equal-rank DeepSIF at the 'cpu' size
        compare.parse_args(["--networks", "deepsif_rank"])


def tiny_argv(tmp_path, *options: str) -> list[str]:
    """A dry run's options (toy head model of 120 regions, tiny presets, a few steps)."""
    head = tmp_path / "toy120.h5"
    HeadModel.toy(n_regions=120).save(head)
    return [
        "--head-model", str(head), "--bank", "synthetic", "--n-times", "32", "--tiny",
        "--epoch-samples", "16", "--batch-size", "8", "--n-val", "8", "--n-eval", "8",
        "--threads", "1", "--no-progress", "--minutes", "5", "--out", str(tmp_path / "c"),
        *options,
    ]  # fmt: skip


def test_trained_minutes_sums_resumed_segments(compare, tmp_path):
    rows = ["epoch,step,kind,loss,val_loss,lr,samples_per_s,wall_s,val_loss_zero"]
    rows += [f"0,{i},train,1,,0.001,1,{w}," for i, w in enumerate([30, 60, 90, 20, 50])]
    (tmp_path / "train_log.csv").write_text("\n".join(rows) + "\n")
    assert compare.trained_minutes(tmp_path) == pytest.approx((90 + 50) / 60)
    assert compare.trained_minutes(tmp_path / "missing") == 0.0


def test_tiny_comparison_chooses_lr_trains_and_reports(compare, tmp_path, capsys):
    argv = tiny_argv(tmp_path, "--seed", "0", "--seed", "1", "--max-steps", "4")
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    # Both learning rates on the first dataset and seed, then only the chosen one.
    for network in ("fair_esi", "deepsif"):
        lr = compare.chosen_lr(compare.parse_args(argv), network)
        assert lr in (1e-3, 1e-4)
        assert f"- {network}: learning rate {lr:g}" in out
        for dataset in ("SimMEG", "SimEEG"):
            for seed in (0, 1):
                run = tmp_path / "c" / dataset / f"seed{seed}" / f"{network}-lr{lr:g}"
                with np.load(run / "eval-strict.npz") as saved:
                    assert saved["precision"].shape == (8,)
                assert (run / "eval-paper.npz").exists()
        other = 1e-4 if lr == 1e-3 else 1e-3
        assert not (tmp_path / "c" / "SimEEG" / "seed0" / f"{network}-lr{other:g}").exists()
    report = (tmp_path / "c" / "compare.md").read_text()
    assert "FAIR-ESI − DeepSIF, strict" in report and "FAIR-ESI − DeepSIF, paper" in report
    assert "16 test samples" in report and "DeepSIF (paper's Table II)" in report
    assert (tmp_path / "c" / "curves.png").stat().st_size > 1000
    # Two seeds: the pooled row and one row per seed; each run's refinement reading.
    assert report.count("| seed 1 alone |") == 4 and "| SimMEG seed 0 fair_esi lr" in report
    assert "| input |" in report and "| - |" in report
    # A copy of the runs without their checkpoints (as bench/data keeps them) reports the same.
    kept = tmp_path / "kept"
    shutil.copytree(tmp_path / "c", kept, ignore=shutil.ignore_patterns("*.pt"))
    assert compare.main([*argv, "--report-only", "--out", str(kept)]) == 0
    body = report.split("\n", 1)[1]  # the first line has this invocation's wall time
    assert (kept / "compare.md").read_text().split("\n", 1)[1] == body
    # A seed one network lacks is left out of that dataset's pooled samples.
    lr = compare.chosen_lr(compare.parse_args(argv), "deepsif")
    for name in ("best.pt", "eval-paper.npz", "eval-strict.npz"):
        (tmp_path / "c" / "SimEEG" / "seed1" / f"deepsif-lr{lr:g}" / name).unlink()
    assert compare.main([*argv, "--report-only"]) == 0
    report = (tmp_path / "c" / "compare.md").read_text()
    assert "### SimEEG 5/1/2: 8 test samples (8 per seed, seeds [0]" in report
    assert "### SimMEG 5/1/2: 16 test samples" in report and report.count("seed 1 alone") == 2


def test_tiny_wide_comparison_reports_both_deepsif_rows(compare, tmp_path):
    argv = tiny_argv(
        tmp_path, "--seed", "0", "--size", "wide", "--datasets", "SimMEG", "--lrs", "1e-3",
        "--max-steps", "2",
    )  # fmt: skip
    assert compare.main(argv) == 0
    report = (tmp_path / "c" / "compare.md").read_text()
    for row in ("DeepSIF, paper", "DeepSIF (equal rank), paper", "DeepSIF (equal rank), strict"):
        assert f"FAIR-ESI − {row}" in report
    assert "| DeepSIF (equal rank) (ours, 0.001) | paper |" in report
    assert (tmp_path / "c" / "SimMEG" / "seed0" / "deepsif_rank-lr0.001" / "best.pt").exists()
