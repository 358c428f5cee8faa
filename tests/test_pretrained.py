"""Pretrained models (fairesi.models.pretrained): loading, refusal of bad files, fresh-sample
evaluation and picking by a recording's channels; a tiny run stands in for a shipped file."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch

from fairesi.cli import main
from fairesi.evaluate import evaluate_pretrained, pretrained_rows
from fairesi.localize import localize, pretrained_for_recording
from fairesi.models import available_pretrained, pretrained
from fairesi.train import read_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:using the analytic stand-in")


@pytest.fixture(scope="module")
def shipped(tiny_run, tmp_path_factory):
    """A directory holding one 'pretrained' model (float16 weights and a card), written the
    way bench/gpu_train.sh packs a checkpoint."""
    payload = read_checkpoint(tiny_run / "last.pt")
    directory = tmp_path_factory.mktemp("pretrained")
    torch.save(
        {
            "config": payload["config"],
            "state_dict": {k: v.half() for k, v in payload["state_dict"].items()},
            "card": {"name": "toy-meg", "training": "2 steps of the tiny preset (a test)"},
        },
        directory / "toy-meg.pt",
    )
    return directory


def test_load_a_shipped_model(shipped):
    assert available_pretrained(shipped) == ["toy-meg"]
    model = pretrained("toy-meg", directory=shipped)
    assert not model.model.training and model.card["name"] == "toy-meg"
    assert model.head_model.n_regions == 50
    x = torch.randn(2, 48, 64)
    with torch.no_grad():
        assert model.model(x).shape == (2, 50, 64)
    with pytest.raises(FileNotFoundError, match="available: toy-meg"):
        pretrained("eeg", directory=shipped)


def test_corrupt_or_foreign_files_are_refused(shipped, tmp_path):
    (tmp_path / "bad.pt").write_bytes((shipped / "toy-meg.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        pretrained("bad", directory=tmp_path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a pretrained model"):
        pretrained("other", directory=tmp_path)


def test_evaluate_on_fresh_samples(shipped):
    result = evaluate_pretrained(
        "toy-meg", n=8, bank="synthetic", directory=shipped, progress=False
    )
    assert result.per_sample["precision"].shape == (8,) and result.protocol == "strict"
    paper = evaluate_pretrained(
        "toy-meg", n=8, bank="synthetic", protocol="paper", directory=shipped, progress=False
    )
    assert paper.rule == "deepsif"


def test_a_mixture_model_is_scored_per_configuration(shipped, tmp_path):
    payload = torch.load(shipped / "toy-meg.pt", weights_only=True)
    payload["config"]["data"]["mixture"] = [[5.0, 1, 1], [-5.0, 1, 0]]
    torch.save(payload, tmp_path / "mix.pt")
    assert pretrained_rows("mix", directory=tmp_path) == ["5/1/1", "-5/1/0"]
    one = evaluate_pretrained(
        "mix", n=4, bank="synthetic", directory=tmp_path, progress=False, configuration="-5/1/0"
    )
    again = evaluate_pretrained(
        "mix",
        n=4,
        bank="synthetic",
        directory=tmp_path,
        progress=False,
        configuration=(-5.0, 1, 0),
    )
    other = evaluate_pretrained(
        "mix", n=4, bank="synthetic", directory=tmp_path, progress=False, configuration="5/1/1"
    )
    assert np.array_equal(one.per_sample["nmse"], again.per_sample["nmse"])
    assert not np.array_equal(one.per_sample["nmse"], other.per_sample["nmse"])
    with pytest.raises(ValueError, match="one 'snr_db/n_sources/n_rings'"):
        evaluate_pretrained("mix", n=4, directory=tmp_path, configuration="5/1/1,5/1/0")


def test_picked_by_the_recording_channels(shipped, toy_head_model):
    lead_field = toy_head_model.lead_field("meg")
    info = mne.create_info(list(lead_field.ch_names), 500.0, list(lead_field.ch_types))
    evoked = mne.EvokedArray(np.random.default_rng(0).standard_normal((48, 80)) * 1e-12, info)
    name, model, head = pretrained_for_recording(evoked, directory=shipped)
    assert name == "toy-meg" and model.metadata["n_times"] == 64
    stc = localize(model, evoked, head_model=head)
    assert stc.data.shape[1] == 80
    eeg = toy_head_model.lead_field("eeg")
    other = mne.EvokedArray(
        np.zeros((32, 80)), mne.create_info(list(eeg.ch_names), 500.0, list(eeg.ch_types))
    )
    with pytest.raises(ValueError, match="fit no shipped model.*toy-meg lacks 48 channels"):
        pretrained_for_recording(other, directory=shipped)


def test_unknown_names_and_empty_directories_say_so(tmp_path, capsys):
    assert main(["evaluate", "--pretrained", "nope"]) == 2
    assert "no pretrained model 'nope' ships" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no pretrained model ships"):
        pretrained_for_recording(
            mne.EvokedArray(np.zeros((1, 4)), mne.create_info(["a"], 500.0, "eeg")),
            directory=tmp_path,
        )


def test_the_shipped_models(toy_head_model):
    """The MEG and EEG models ship (at most 10 MB together), load on the default head model,
    and carry a card with Table II metrics under both protocols for every configuration."""
    from fairesi.models.pretrained import PRETRAINED_DIR

    assert {"meg", "eeg"} <= set(available_pretrained())
    assert sum(p.stat().st_size for p in PRETRAINED_DIR.glob("*.pt")) <= 10 * 2**20
    for name, modality, n_channels in (("meg", "meg", 306), ("eeg", "eeg", 256)):
        shipped = pretrained(name)
        assert shipped.config["head_model"]["modality"] == modality
        assert shipped.model.n_channels == n_channels and not shipped.model.training
        card = shipped.card
        rows = {(m["configuration"], m["protocol"]) for m in card["metrics"]}
        assert rows == {(c, p) for c in card["configurations"] for p in ("paper", "strict")}
        assert card["training"]["cpu_hours"] > 0 and card["limits"]


def test_pack_script_measures_the_card_on_the_packed_weights(tiny_run, tmp_path, bench_script):
    """bench/pack_pretrained.py: float16 weights, one metrics row per configuration and
    protocol, the budget from train_log.csv, and a file `pretrained` loads."""
    pack = bench_script("pack_pretrained")
    argv = [str(tiny_run / "last.pt"), "toy", "--n", "3", "--bank", "synthetic"]
    argv += ["--hardware", "test", "--out-dir", str(tmp_path), "--card-dir", str(tmp_path)]
    assert pack.main(argv) == 0
    model = pretrained("toy", directory=tmp_path)
    rows = model.card["metrics"]
    assert [r["protocol"] for r in rows] == ["paper", "strict"] and rows[0]["n"] == 3
    again = evaluate_pretrained(
        "toy", n=3, bank="synthetic", directory=tmp_path, progress=False, protocol="strict"
    )
    assert rows[1]["nmse"][0] == pytest.approx(again.summary["nmse"][0] * 1e4)
    payload = torch.load(tmp_path / "toy.pt", weights_only=True)
    assert all(
        v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point()
    )
    assert model.card["training"]["steps"] > 0
    assert "| strict |" in (tmp_path / "toy.md").read_text()
    # The card names every hyper-parameter; a run of today's defaults differs in none.
    assert model.card["resolved_hyper"]["key_energy"] == "input" and model.card["differs"] == {}
    assert "the same as a network built today" in (tmp_path / "toy.md").read_text()


def test_the_card_says_which_defaults_changed_after_the_run(tiny_run, bench_script, tmp_path):
    """A checkpoint whose ``resolved`` record predates ``key_energy`` (as the shipped
    models' do) rebuilds with its ``registry.ADDED_LATER`` value; the card lists it beside
    today's default."""
    pack = bench_script("pack_pretrained")
    payload = read_checkpoint(tiny_run / "last.pt")
    config = payload["config"]
    del config["model"]["resolved"]["key_energy"]
    torch.save({"config": config, "state_dict": payload["state_dict"], "card": {}},
               tmp_path / "old.pt")  # fmt: skip
    record = pack.hyper_record(pretrained("old", directory=tmp_path), config)
    assert record["differs"] == {"key_energy": "refined"}
    assert record["today_default"]["key_energy"] == "input"
    text = pack.hyper_sentence(record)
    assert "`key_energy='refined'` (today's default `'input'`)" in text


def test_fine_tuning_from_a_shipped_model(shipped, monkeypatch):
    import importlib

    from fairesi.train.checkpoint import init_source

    pretrained_module = importlib.import_module("fairesi.models.pretrained")

    monkeypatch.setattr(pretrained_module, "PRETRAINED_DIR", shipped)
    config, state = init_source("pretrained:toy-meg")
    assert config["head_model"]["modality"] == "meg"
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    with pytest.raises(FileNotFoundError, match=r"no shipped model 'eeg' \(available: toy-meg\)"):
        init_source("pretrained:eeg")


def test_a_shipped_model_exports_and_runs_in_the_runner(shipped, monkeypatch, tmp_path):
    import importlib
    import os
    import subprocess

    from fairesi.data import normalise_input
    from fairesi.export import export_checkpoint, load_exported, runner_path

    monkeypatch.setattr(importlib.import_module("fairesi.models.pretrained"), "PRETRAINED_DIR",
                        shipped)  # fmt: skip
    path = export_checkpoint("pretrained:toy-meg", tmp_path / "toy.pt")
    exported = load_exported(path)
    x = torch.randn(2, 48, 64)
    with torch.no_grad():  # the export normalises raw epochs as training did
        expected = pretrained("toy-meg", directory=shipped).model(normalise_input(x))
        torch.testing.assert_close(exported(x), expected)
    assert main(["export", "pretrained:toy-meg", "-o", str(tmp_path / "cli.pt")]) == 0
    if os.environ.get("FAIRESI_NO_RUNNER") == "1":
        return
    np.save(tmp_path / "x.npy", x.numpy())
    run = subprocess.run([str(runner_path()), str(path), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy"), "--batch"], capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected.numpy(), atol=1e-5)


def test_evaluate_pretrained_against_an_earlier_evaluation(shipped, monkeypatch, tmp_path, capsys):
    """`fairesi evaluate --pretrained NAME --against EVAL`: the paired difference to an
    earlier evaluation of the same fresh samples (a newer version of a shipped model)."""
    import importlib

    monkeypatch.setattr(importlib.import_module("fairesi.models.pretrained"), "PRETRAINED_DIR",
                        shipped)  # fmt: skip
    args = ["evaluate", "--pretrained", "toy-meg", "--n", "3", "--bank", "synthetic"]
    args += ["--no-progress", "--out"]
    assert main([*args, str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main([*args, str(tmp_path / "b"), "--against", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "Paired difference on the same samples" in out and "+0.00 ± 0.00" in out
    assert "Paired difference" in (tmp_path / "b" / "metrics.md").read_text()
    assert main([*args, str(tmp_path / "c"), "--n", "2", "--against", str(tmp_path / "a")]) == 2


def test_the_card_names_rows_whose_maps_are_too_wide(bench_script):
    """A paper-protocol row with recall 10 or more points above precision gets a known
    limit; strict rows and narrower gaps do not."""
    pack = bench_script("pack_pretrained")

    def row(configuration, protocol, precision, recall):
        return {"configuration": configuration, "protocol": protocol,
                "precision": (precision, 5.0), "recall": (recall, 5.0)}  # fmt: skip

    metrics = [
        row("5/1/2", "paper", 57.42, 92.93),
        row("5/1/2", "strict", 60.0, 97.0),
        row("5/2/3", "paper", 64.8, 62.58),
        row("5/3/2", "paper", 80.0, 89.99),
    ]
    line = pack.wide_map_limit(metrics)
    assert "5/1/2: 57.4% against 92.9%" in line and "on 1 of the 3 configurations" in line
    assert "5/2/3" not in line and "5/3/2" not in line
    assert pack.wide_map_limit(metrics[1:]) is None
    assert "5/3/2" in pack.wide_map_limit(metrics, points=9.9)


def test_the_card_names_the_patch_growth_of_its_paper_rows(bench_script):
    """A record from before ``patch_growth`` (the first shipped models') reads as the random
    growth, and the card says its paper rows are not on the candidates; each shipped card
    names its own model's growth."""
    pack = bench_script("pack_pretrained")
    record = pretrained("meg").config["data"]
    before = {k: v for k, v in record.items() if k != "patch_growth"}
    assert "'random'" in pack.growth_limit(before) and "candidate" in pack.growth_limit(before)
    fresh = {**before, "patch_growth": "candidates"}
    assert "'candidates'" in pack.growth_limit(fresh)
    strict = {**before, "protocol": "strict", "disjoint_centres": True}
    assert "'rings'" in pack.growth_limit(strict)
    for name in ("meg", "eeg"):
        shipped = pretrained(name)
        assert pack.growth_limit(shipped.config["data"]) in shipped.card["limits"]
