"""Evaluation harness: metrics table, report files, paper reference, bad input."""

import csv

import numpy as np
import pytest
import torch

from fairesi.cli import main
from fairesi.evaluate import (
    TABLE_METRICS,
    evaluate_checkpoint,
    evaluate_estimator,
    format_paired_table,
    format_table,
    read_per_sample,
    reference_cells,
    table_cells,
    write_report,
)
from fairesi.paper import PAPER_FAIR_ESI, paper_reference

LABELS = [name for _, name, _ in TABLE_METRICS]


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    return tiny_run / "last.pt"


@pytest.fixture(scope="module")
def synth():
    from fairesi.data import SimConfig, Synthesizer
    from fairesi.headmodel import HeadModel
    from fairesi.simulate.bank import WaveformBank

    head_model = HeadModel.toy()
    config = SimConfig.preset("SimMEG", n_times=64, n_samples=240)
    return Synthesizer(head_model, WaveformBank.synthetic(head_model.n_regions), config, seed=3)


def test_checkpoint_report_has_four_files_and_five_metrics(checkpoint, tmp_path):
    result = evaluate_checkpoint(checkpoint, n=10, batch_size=4, progress=False)
    assert set(result.per_sample) == {key for key, _, _ in TABLE_METRICS}
    assert all(v.shape == (10,) for v in result.per_sample.values())
    paths = write_report(result, tmp_path / "eval")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [
        "metrics.csv",
        "metrics.md",
        "per_sample.csv",
        "reconstruction.png",
    ]
    markdown = paths["markdown"].read_text()
    for label in LABELS:
        assert label in markdown
    with open(paths["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["metric"] for r in rows] == LABELS
    for row, (key, _, factor) in zip(rows, TABLE_METRICS, strict=True):
        values = result.per_sample[key] * factor
        assert float(row["mean"]) == pytest.approx(np.nanmean(values))
        assert float(row["std"]) == pytest.approx(np.nanstd(values))
        assert int(row["n_samples"]) == np.isfinite(values).sum()
    with open(paths["per_sample"], newline="") as f:
        per_sample = list(csv.DictReader(f))
    assert [int(r["sample"]) for r in per_sample] == list(range(10))
    np.testing.assert_allclose(
        [float(r["le_mm"]) for r in per_sample], result.per_sample["le_mm"], equal_nan=True
    )
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_checkpoint_gives_the_same_samples(checkpoint):
    a = evaluate_checkpoint(checkpoint, n=6, batch_size=4, progress=False)
    b = evaluate_checkpoint(checkpoint, n=6, batch_size=6, progress=False)
    for key in a.per_sample:
        np.testing.assert_allclose(a.per_sample[key], b.per_sample[key], rtol=1e-5, atol=1e-9)


def test_perfect_estimator_scores_perfectly(synth):
    index = torch.arange(10)
    targets = iter(torch.split(synth.batch("test", index).target, 4))
    result = evaluate_estimator(lambda x: next(targets), synth, n=10, batch_size=4, progress=False)
    np.testing.assert_allclose(result.per_sample["precision"], 1.0)
    np.testing.assert_allclose(result.per_sample["recall"], 1.0)
    np.testing.assert_allclose(result.per_sample["le_mm"], 0.0, atol=1e-9)
    np.testing.assert_allclose(result.per_sample["nmse"], 0.0, atol=1e-12)
    assert result.reference is None  # 64 samples per trial is not a Table II configuration


def test_estimator_output_is_checked(synth):
    n_regions = synth.head_model.n_regions
    with pytest.raises(ValueError, match=r"shape \(2, 3, 64\), expected \(B, R, T\)"):
        evaluate_estimator(lambda x: torch.zeros(2, 3, 64), synth, n=2, progress=False)
    with pytest.raises(ValueError, match="NaN/Inf"):
        evaluate_estimator(
            lambda x: torch.full((x.shape[0], n_regions, 64), float("nan")),
            synth,
            n=2,
            progress=False,
        )
    with pytest.raises(ValueError, match=r"n must be in \[1, 20\].*got 21"):
        evaluate_estimator(lambda x: x, synth, n=21, progress=False)


def test_paper_reference_and_table():
    assert len(PAPER_FAIR_ESI) == 7
    row = paper_reference(
        {"modality": "meg", "n_times": 500, "snr_db": 5, "n_sources": 1, "n_rings": 2}
    )
    assert row["precision"] == (87.18, 13.74)
    assert row["nmse"] == (1.47, 1.54)
    eeg = {"modality": "eeg", "n_times": 260, "snr_db": 5.0, "n_sources": 1, "n_rings": 2}
    assert paper_reference(eeg)["recall"] == (89.80, 15.40)
    assert paper_reference({**eeg, "n_sources": 2}) is None
    summary = {
        "precision": (0.5, 0.25),
        "recall": (1.0, 0.0),
        "le_mm": (2.0, 1.0),
        "sd_mm": (3.0, 1.5),
        "nmse": (2e-4, 1e-4),
    }
    table = format_table(summary, label="ours", reference=row)
    assert "| Metric | ours | FAIR-ESI (paper) |" in table
    assert "| Precision (%) | 50.00 ± 25.00 | 87.18 ± 13.74 |" in table
    assert "| nMSE (×1e-4) | 2.00 ± 1.00 | 1.47 ± 1.54 |" in table
    assert "FAIR-ESI" not in format_table(summary)


def test_paired_table_and_per_sample_round_trip(synth, tmp_path):
    def perfect(x):
        return truth

    index = torch.arange(6)
    truth = synth.batch("test", index).target
    result = evaluate_estimator(perfect, synth, n=6, batch_size=6, progress=False)
    write_report(result, tmp_path)
    read_index, per_sample = read_per_sample(tmp_path / "per_sample.csv")
    assert read_index.tolist() == list(range(6))
    for key in per_sample:
        np.testing.assert_allclose(per_sample[key], result.per_sample[key])
    worse = {k: v.copy() for k, v in per_sample.items()}
    worse["le_mm"] = worse["le_mm"] + np.arange(6.0)  # mean +2.5 mm, SE 1.87/sqrt(6)
    table = format_paired_table(per_sample, {"worse": worse}, base_label="perfect")
    assert "| difference to perfect | Precision (%)" in table
    se = np.arange(6.0).std(ddof=1) / np.sqrt(6)
    assert f"| +0.00 ± 0.00 | +2.50 ± {se:.2f} | +0.00 ± 0.00 |" in table
    # A row with its own reference pairs with it (worse against worse: no difference).
    table = format_paired_table(per_sample, {"worse": worse, "alone": worse},
                                base_label="perfect", row_bases={"alone": worse})  # fmt: skip
    assert f"| worse | +0.00 ± 0.00 | +0.00 ± 0.00 | +2.50 ± {se:.2f} |" in table
    assert "| alone | +0.00 ± 0.00 | +0.00 ± 0.00 | +0.00 ± 0.00 |" in table
    (tmp_path / "bad.csv").write_text("sample,precision\n0,1.0\n")
    with pytest.raises(ValueError, match="lacks the column"):
        read_per_sample(tmp_path / "bad.csv")


def test_checkpoint_for_another_head_model_is_refused(checkpoint, tmp_path):
    from fairesi.headmodel import HeadModel

    with pytest.raises(ValueError, match="50 regions.*30 regions"):
        evaluate_checkpoint(checkpoint, head_model=HeadModel.toy(n_regions=30), progress=False)


def test_cli(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0
    assert "--head-model" in capsys.readouterr().out
    out = tmp_path / "eval"
    args = ["evaluate", str(checkpoint), "--n", "4", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for label in LABELS:
        assert label in printed
    assert (out / "reconstruction.png").exists()

    # --against: the paired difference to an earlier evaluation of the same samples.
    index, per_sample = read_per_sample(out)
    assert index.tolist() == [0, 1, 2, 3] and per_sample["precision"].shape == (4,)
    again = tmp_path / "again"
    args = ["evaluate", str(checkpoint), "--n", "4", "--out", str(again), "--no-progress"]
    assert main([*args, "--against", str(out / "per_sample.csv")]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| last.pt |"))
    assert "+0.00 ± 0.00" in row  # the same model on the same samples
    assert "Paired difference" in (again / "metrics.md").read_text()
    # --draw: the same samples' locations with new data, paired with draw 0.
    drawn = tmp_path / "drawn"
    assert (
        main([*args[:-2], str(drawn), "--no-progress", "--draw", "3", "--against", str(out)]) == 0
    )
    capsys.readouterr()
    assert "draw 3" in (drawn / "metrics.md").read_text()
    assert not np.array_equal(read_per_sample(drawn)[1]["nmse"], per_sample["nmse"])
    assert main([*args[:3], "5", *args[4:], "--against", str(out)]) == 2
    assert "other samples" in capsys.readouterr().err
    assert main([*args, "--against", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err

    broken = tmp_path / "broken.pt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    bad_out = tmp_path / "not-written"
    assert main(["evaluate", str(broken), "--out", str(bad_out), "--no-progress"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert not bad_out.exists()


def test_protocols(checkpoint, tmp_path):
    """The checkpoint's own (strict) protocol by default; --protocol paper evaluates on the
    paper's data with DeepSIF's signed rule and reports the empty reconstructions."""
    strict = evaluate_checkpoint(checkpoint, n=8, progress=False)
    assert (strict.protocol, strict.rule, strict.n_empty) == ("strict", "abs", 0)
    paper = evaluate_checkpoint(checkpoint, n=8, progress=False, protocol="paper")
    assert (paper.protocol, paper.rule) == ("paper", "deepsif")
    empty = np.isnan(paper.per_sample["precision"])
    assert paper.n_empty == int(empty.sum())
    assert np.isnan(paper.per_sample["recall"][empty]).all()
    paths = write_report(paper, tmp_path, label="x")
    text = paths["markdown"].read_text()
    assert "paper protocol (region rule 'deepsif')" in text
    if paper.n_empty:
        assert f"{paper.n_empty} of the 8 samples had an empty reconstruction" in text


def test_table_cells_scale_to_table_units_and_leave_out_undefined_samples():
    per_sample = {
        "precision": np.array([0.5, 1.0, np.nan]),
        "recall": np.array([np.nan, np.nan, np.nan]),
        "le_mm": np.array([1.0, 3.0, 2.0]),
        "sd_mm": np.array([0.0, 0.0, 0.0]),
        "nmse": np.array([1e-4, 3e-4, 2e-4]),
    }
    assert table_cells(per_sample) == [
        "75.00 ± 25.00", "n/a", f"2.00 ± {np.std([1, 3, 2]):.2f}", "0.00 ± 0.00",
        f"2.00 ± {np.std([1, 3, 2]):.2f}",
    ]  # fmt: skip
    assert reference_cells(PAPER_FAIR_ESI["SimMEG", 5.0, 1, 2])[:3] == [
        "87.18 ± 13.74", "92.57 ± 10.88", "1.27 ± 2.65",
    ]  # fmt: skip
