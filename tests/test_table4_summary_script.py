"""bench/table4_summary.py: Table IV from the study's evaluations, seeds pooled, paired."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from fairesi.train.runtime import LOG_FIELDS

KEYS = ("precision", "recall", "le_mm", "sd_mm", "nmse")


def write_eval(path, samples, precision, le_mm):
    """A per_sample.csv as ``fairesi evaluate`` writes it (recall/SD/nMSE fixed)."""
    path.mkdir(parents=True)
    with open(path / "per_sample.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sample", *KEYS])
        for s, p, le in zip(samples, precision, le_mm, strict=True):
            writer.writerow([s, p, 0.5, le, 1.0, 1e-3])


def write_log(run, epochs):
    """A train_log.csv with one epoch row per (step, validation loss, learning rate)."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "train_log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS, restval="")
        writer.writeheader()
        for i, (step, val, lr) in enumerate(epochs):
            writer.writerow(
                {
                    "epoch": i,
                    "step": step,
                    "kind": "epoch",
                    "val_loss": val,
                    "lr": lr,
                    "wall_s": step / 10,
                    "val_loss_zero": 300.0,
                }
            )


def test_rows_pool_seeds_and_pair_with_the_no_view_row(bench_script, tmp_path):
    table4 = bench_script("table4_summary")
    none_p = {0: [0.6, 0.7], 1: [0.5, 0.9]}
    all_p = {0: [0.7, 0.7], 1: [0.6, 1.0]}
    for seed in (0, 1):
        for protocol in ("paper", "strict"):
            base = tmp_path / f"seed{seed}"
            write_eval(base / "t4-none" / f"eval-{protocol}", [0, 1], none_p[seed], [2.0, 4.0])
            write_eval(base / "key-input" / f"eval-{protocol}", [0, 1], all_p[seed], [1.0, 3.0])
    # the spectral row only on seed 0 (in bench/data/'s layout): paired over seed 0 alone
    write_eval(tmp_path / "seed0" / "t4-spectral", [0, 1], [0.9, 0.9], [2.0, 2.0])
    (tmp_path / "seed0" / "t4-spectral" / "per_sample.csv").rename(
        tmp_path / "seed0" / "t4-spectral" / "per_sample_paper.csv"
    )
    # flat: lowered rate before the last 3,000 steps, which gained < 2%
    write_log(
        tmp_path / "seed0" / "t4-none",
        [(1000, 200, 1e-3), (2000, 150, 5e-4), (4000, 149, 5e-4), (5000, 149.5, 5e-4)],
    )
    write_log(tmp_path / "seed1" / "t4-none", [(1000, 200, 1e-3), (2000, 150, 1e-3)])

    text = table4.summary(table4.parse_args(["--out", str(tmp_path)]))
    lines = text.splitlines()
    assert "| none (-/-/-) | 0 | 5000 | 149.0 (4000) | 0.0005 | yes |" in lines
    assert "| none (-/-/-) | 1 | 2000 | 150.0 (2000) | 0.001 | no |" in lines
    paper, strict = text.split("**paper protocol**")[1].split("**strict protocol**")
    # all: precision 0.7, 0.7, 0.6, 1.0 -> 75.00 ± std; LE 1, 3, 1, 3 -> 2.00 ± 1.00
    std = np.std([70, 70, 60, 100])
    assert f"| all (✓/✓/✓) | 0,1 | 4 | 75.00 ± {std:.2f} | 50.00 ± 0.00 | 2.00 ± 1.00 |" in paper
    # all − none: precision +10, 0, +10, +10 points -> +7.50 ± s.e.; LE -1 mm on every sample
    se = np.std([10, 0, 10, 10], ddof=1) / 2
    assert (
        f"| all (✓/✓/✓) − none, seeds 0,1 | +7.50 ± {se:.2f} | +0.00 ± 0.00 | -1.00 ± 0.00 |"
        in paper
    )
    assert "| spectral (✓/-/-) − none, seeds 0 | +25.00 ± 5.00 |" in paper
    assert "| all (✓/✓/✓), paper's Table IV | | | 88.30 ± 12.15 |" in paper
    assert "| all (✓/✓/✓) − none | +7.08 |" in paper
    assert "spectral" not in strict and "paper's Table IV" not in strict
    assert "| all (✓/✓/✓) − none, seeds 0,1 | +7.50" in strict


def test_rows_scored_on_other_samples_are_refused(bench_script, tmp_path, capsys):
    table4 = bench_script("table4_summary")
    write_eval(tmp_path / "seed0" / "t4-none" / "eval-paper", [0, 1], [0.5, 0.5], [1.0, 1.0])
    write_eval(tmp_path / "seed0" / "key-input" / "eval-paper", [0, 2], [0.5, 0.5], [1.0, 1.0])
    with pytest.raises(ValueError, match="other test samples"):
        table4.summary(table4.parse_args(["--out", str(tmp_path)]))
    assert table4.main(["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("table4_summary: error:") and err.count("\n") == 1


def test_bad_arguments_exit_with_one_line(bench_script, tmp_path, capsys):
    table4 = bench_script("table4_summary")
    with pytest.raises(SystemExit):
        table4.parse_args(["--out", str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        table4.parse_args(["--out", str(tmp_path), "--seeds", "0,x"])
    assert "comma-separated integers" in capsys.readouterr().err
