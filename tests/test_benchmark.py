"""``fairesi benchmark``: configurations x methods on the same test samples (tiny preset)."""

import csv

import numpy as np
import pytest
import torch

from fairesi.benchmark import (
    TABLE2_ROWS,
    TableRow,
    check_methods,
    paper_figures,
    run_benchmark,
)
from fairesi.cli import main
from fairesi.paper import PAPER_FAIR_ESI, PAPER_TABLE2

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")

ROW = TableRow("SimMEG", 5.0, 1, 2)
FAST = {"threads": 1, "progress": False, "max_steps": 2, "n_train_samples": 16, "n_val_samples": 8}


def test_rows_and_paper_figures():
    assert TableRow.parse("SimMEG:-5:1:2") == TableRow("SimMEG", -5.0, 1, 2)
    assert TableRow("SimMEG", -5.0, 1, 2).label == "SimMEG_r-5_Ns1_Nn2"
    with pytest.raises(ValueError, match="DATASET:SNR_DB"):
        TableRow.parse("SimMEG:5:1")
    with pytest.raises(ValueError, match="integers"):
        TableRow.parse("SimMEG:5:one:2")
    # The seven Table II rows, each with the paper's figures for every implemented method.
    assert len(TABLE2_ROWS) == 7 and set(PAPER_TABLE2) == {r.key for r in TABLE2_ROWS}
    assert set(PAPER_FAIR_ESI) == set(PAPER_TABLE2)
    assert paper_figures(ROW, "deepsif")["precision"] == (82.2, 16.4)
    assert paper_figures(ROW, "fair_esi")["le_mm"] == (1.27, 2.65)
    assert paper_figures(ROW, "eLORETA") is None
    with pytest.raises(ValueError, match="unknown methods"):
        check_methods(["sLORETA", "beamformer"])


def test_benchmark_runs_methods_on_the_same_samples(tmp_path):
    result = run_benchmark(
        [ROW],
        ["deepsif", "sLORETA", "dSPM"],
        preset="tiny",
        runs_dir=tmp_path / "runs",
        train_missing=True,
        train_overrides=FAST,
        n=6,
        batch_size=4,
        progress=False,
    )
    checkpoint = tmp_path / "runs" / "deepsif" / ROW.label
    assert (checkpoint / "last.pt").is_file()
    examples = [result.results[ROW.label, m].example for m in result.methods]
    for example in examples[1:]:
        np.testing.assert_array_equal(example["target"], examples[0]["target"])
    # sLORETA and dSPM share MNE's kernel up to a per-region scale: same sign pattern.
    s, d = (examples[i]["estimate"] for i in (1, 2))
    assert np.array_equal(np.sign(s), np.sign(d))
    for method in result.methods:
        per_sample = result.results[ROW.label, method].per_sample
        assert all(len(v) == 6 for v in per_sample.values())
        assert 0 <= np.nanmin(per_sample["precision"]) <= np.nanmax(per_sample["precision"]) <= 1

    paths = result.write(tmp_path / "report")
    markdown = paths["markdown"].read_text()
    assert "| Metric | DeepSIF | sLORETA | dSPM | DeepSIF (paper) | sLORETA (paper) |" in markdown
    assert "82.20 ± 16.40" in markdown  # the paper's DeepSIF precision for this row
    with open(paths["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * 5
    precision = {r["method"]: float(r["mean"]) for r in table if r["metric"] == "Precision (%)"}
    for method in result.methods:
        summary_mean = result.results[ROW.label, method].summary["precision"][0]
        assert precision[method] == pytest.approx(100 * summary_mean)
    with open(paths["per_sample"], newline="") as f:
        assert len(list(csv.DictReader(f))) == 3 * 6
    assert paths[ROW.label].stat().st_size > 10_000

    # An existing checkpoint is reused; one trained on other data is refused.
    again = run_benchmark(
        [ROW], ["deepsif"], preset="tiny", runs_dir=tmp_path / "runs", n=6, progress=False
    )
    torch.testing.assert_close(
        torch.as_tensor(again.results[ROW.label, "deepsif"].example["estimate"]),
        torch.as_tensor(examples[0]["estimate"]),
    )
    with pytest.raises(ValueError, match=r"other data.*\['disjoint_centres'\]"):
        run_benchmark(
            [ROW],
            ["deepsif"],
            preset="tiny",
            runs_dir=tmp_path / "runs",
            train_overrides={"disjoint_centres": False},
            n=2,
            progress=False,
        )
    with pytest.raises(ValueError, match="other data"):
        run_benchmark(
            [TableRow("SimMEG", 15.0, 1, 2)],
            ["deepsif"],
            preset="tiny",
            checkpoints={"deepsif": str(checkpoint / "last.pt")},
            n=2,
            progress=False,
        )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # A tolerance no cost change can meet: every sample runs into max_iter.
        (
            {"max_iter": 2, "tol": 1e-300},
            "0 of 4 samples converged (relative cost change < "
            "1e-300) within max_iter = 2; iterations per batch: 2, 2",
        ),
        # A tolerance the first change meets: one iteration, every sample converged.
        (
            {"max_iter": 50, "tol": 10.0},
            "4 of 4 samples converged (relative cost change < 10) "
            "within max_iter = 50; iterations per batch: 1, 1",
        ),
    ],
)
def test_benchmark_reports_champagne_convergence(tmp_path, options, expected):
    result = run_benchmark(
        [ROW],
        ["Champagne"],
        preset="tiny",
        classical_options={"Champagne": options},
        n=4,
        batch_size=2,
        progress=False,
    )
    assert result.notes[ROW.label, "Champagne"] == f"Champagne: {expected}"
    markdown = result.write(tmp_path / "report")["markdown"].read_text()
    assert f"- Champagne: {expected}" in markdown


def test_benchmark_cli_errors(tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        ["benchmark", "--preset", "tiny", "--config", "SimMEG:5:1:2", "--methods", "deepsif"]
        + ["--runs-dir", str(tmp_path), "--out", str(out), "--no-progress", "--n", "2"]
    )
    assert code == 2
    assert "--train-missing" in capsys.readouterr().err
    assert not out.exists()
    code = main(["benchmark", "--checkpoint", "deepsif", "--out", str(out)])
    assert code == 2 and "METHOD=PATH" in capsys.readouterr().err
    code = main(["benchmark", "--methods", "sLORETA", "--checkpoint", "sLORETA=x.pt"])
    assert code == 2 and "not networks" in capsys.readouterr().err


def test_benchmark_cli_shared_centres_reach_the_data(tmp_path, monkeypatch):
    import fairesi.benchmark

    seen = {}

    def fake_run(rows, methods, **kwargs):
        seen.update(kwargs["train_overrides"])
        raise ValueError("stop here")

    monkeypatch.setattr(fairesi.benchmark, "run_benchmark", fake_run)
    args = ["benchmark", "--preset", "tiny", "--methods", "sLORETA", "--out", str(tmp_path)]
    assert main([*args, "--shared-centres"]) == 2
    assert seen["disjoint_centres"] is False
    seen.clear()
    assert main(args) == 2
    assert "disjoint_centres" not in seen


def test_fusion_benchmark_on_identical_samples(tmp_path):
    """--dataset SimEEGMEG: fused networks, FAIR-ESI on each modality of the same samples,
    sLORETA on both modalities; paired differences of the fused to the single ones."""
    from fairesi.benchmark import FUSION_METHODS, FUSION_ROWS, method_label

    assert len(FUSION_ROWS) == 9 and {r.dataset for r in FUSION_ROWS} == {"SimEEGMEG"}
    row = TableRow("SimEEGMEG", 5.0, 1, 1)
    result = run_benchmark(
        [row],
        list(FUSION_METHODS),
        preset="tiny",
        runs_dir=tmp_path / "runs",
        train_missing=True,
        train_overrides=FAST,
        n=6,
        batch_size=3,
        progress=False,
    )
    # The same samples for every method: the same targets.
    examples = [result.results[row.label, m].example for m in result.methods]
    for example in examples[1:]:
        np.testing.assert_array_equal(example["target"], examples[0]["target"])
    checkpoint = tmp_path / "runs" / "fair_esi@eeg" / row.label / "last.pt"
    from fairesi.train import load_checkpoint

    eeg_only = load_checkpoint(checkpoint)
    assert eeg_only.config["data"]["view"] == "eeg"
    assert len(eeg_only.config["head_model"]["ch_names"]) == 32
    text = result.markdown()
    for method in FUSION_METHODS:
        assert method_label(method) in text
    assert "Paired difference to FAIR-ESI (EEG only)" in text
    assert "Paired difference to FAIR-ESI (MEG only)" in text
    with pytest.raises(ValueError, match="unknown methods"):
        check_methods(["fair_esi@ecog"])


def test_one_mixture_checkpoint_serves_each_of_its_rows(tmp_path):
    """A network trained with --mixture is scored on each row it was trained on (the same
    test samples as a row-specific run), and refused on a row outside its mixture."""
    from fairesi.train import TrainConfig, train

    rows = [TableRow("SimMEG", 5.0, 1, 2), TableRow("SimMEG", -5.0, 1, 1)]
    config = TrainConfig.from_sources(
        preset="tiny",
        overrides={**FAST, "model": "deepsif", "mixture": "5/1/2,-5/1/1",
                   "out_dir": str(tmp_path / "mix")},
    )  # fmt: skip
    train(config)
    result = run_benchmark(
        rows,
        ["deepsif", "sLORETA"],
        preset="tiny",
        checkpoints={"deepsif": str(tmp_path / "mix" / "last.pt")},
        n=3,
        progress=False,
    )
    for row in rows:  # the same test samples as the classical method saw
        targets = [result.results[row.label, m].example["target"] for m in result.methods]
        np.testing.assert_array_equal(targets[0], targets[1])
    with pytest.raises(ValueError, match="other data"):
        run_benchmark(
            [TableRow("SimMEG", 15.0, 1, 2)],
            ["deepsif"],
            preset="tiny",
            checkpoints={"deepsif": str(tmp_path / "mix" / "last.pt")},
            n=2,
            progress=False,
        )
