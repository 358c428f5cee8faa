"""Training loop, checkpoints and exact resume (toy head model, synthetic bank, tiny preset)."""

import csv
import dataclasses
import hashlib
import math

import pytest
import torch

from fairesi.cli import build_parser, main
from fairesi.experiment import synthesizer
from fairesi.train import (
    NonFiniteError,
    OptimConfig,
    RunConfig,
    TrainConfig,
    Trainer,
    load_checkpoint,
    read_checkpoint,
    source_loss,
    train,
)

# Four batches of 8 per epoch, so six steps cross an epoch boundary (validation, LR
# scheduler, best.pt) and both halves of a split run stop mid-epoch.
SMALL = {
    "n_train_samples": 32,
    "n_val_samples": 16,
    "batch_size": 8,
    "max_epochs": 50,
    "checkpoint_every": 2,
    "threads": 1,
    "progress": False,
}


def small_config(out_dir, **overrides):
    return TrainConfig.from_sources(
        preset="tiny", overrides={**SMALL, "out_dir": str(out_dir), **overrides}
    )


def read_log(out_dir):
    with open(out_dir / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_training_state(a, b):
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for key in opt_a:
        for name in opt_a[key]:
            assert torch.equal(torch.as_tensor(opt_a[key][name]), torch.as_tensor(opt_b[key][name]))
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["progress"] == b["progress"]


def assert_stopped_at_4_and_resumes_exactly(out_dir, reference_run, monkeypatch, real_step):
    """A run stopped inside step 5 kept step 4 and, resumed, matches the reference run."""
    assert read_checkpoint(out_dir / "last.pt")["progress"]["step"] == 4
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(resume=out_dir / "last.pt", max_steps=6)
    ref_out, _ = reference_run
    assert_same_training_state(
        read_checkpoint(out_dir / "last.pt"), read_checkpoint(ref_out / "last.pt")
    )


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """Six steps in one go: the run every resumed run must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference")
    metrics = train(small_config(out, max_steps=6))
    return out, metrics


def test_short_run_writes_checkpoints_and_log(reference_run):
    out, metrics = reference_run
    assert metrics["stopped"] == "max_steps"
    assert metrics["step"] == 6 and metrics["epoch"] == 0
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "train_log.csv"}
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    epochs = [r for r in read_log(out) if r["kind"] == "epoch"]
    assert [int(r["step"]) for r in epochs] == [4]
    assert float(epochs[0]["val_loss"]) == pytest.approx(metrics["val_loss"])
    # The all-zero reference: the validation samples' mean squared target norm.
    config = small_config(out)
    synth = synthesizer(config.data, head_model=config.head_model, bank=config.bank, seed=0)
    target = synth.batch("val", torch.arange(SMALL["n_val_samples"])).target
    zero = float(target.double().square().sum() / len(target))
    assert metrics["val_loss_zero"] == pytest.approx(zero, rel=1e-6)
    assert float(epochs[0]["val_loss_zero"]) == pytest.approx(zero, rel=1e-6)
    best = read_checkpoint(out / "best.pt")
    assert best["progress"]["step"] == 4 and best["progress"]["epoch"] == 1


def test_checkpoint_loads_with_weights_only(reference_run):
    out, _ = reference_run
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["format"] == "fairesi-checkpoint"
    config = payload["config"]
    assert set(config) == {"model", "data", "head_model", "train"}
    assert config["model"]["name"] == "fair_esi"
    assert config["head_model"]["n_regions"] == 50
    assert len(config["head_model"]["ch_names"]) == 48  # toy MEG channels
    assert config["data"]["n_times"] == 64

    ckpt = load_checkpoint(out / "last.pt")
    assert not ckpt.model.training
    for key, value in ckpt.model.state_dict().items():
        assert torch.equal(value, payload["state_dict"][key])
    x = torch.randn(2, 48, 64)
    with torch.no_grad():
        assert ckpt.model(x).shape == (2, 50, 64)
    assert ckpt.train_config.n_train_samples == SMALL["n_train_samples"]


def test_loss_decreases(tmp_path):
    train(small_config(tmp_path, max_epochs=3, n_train_samples=64, lr=3e-3))
    epochs = [r for r in read_log(tmp_path) if r["kind"] == "epoch"]
    assert len(epochs) == 3
    val = [float(r["val_loss"]) for r in epochs]
    train_loss = [float(r["loss"]) for r in epochs]
    assert val[-1] < val[0]
    assert train_loss[-1] < train_loss[0]


def test_source_loss_is_the_papers_frobenius_loss():
    gen = torch.Generator().manual_seed(0)
    estimate, target = torch.randn(2, 3, 4, 5, generator=gen).unbind(0)
    by_hand = sum(((estimate[n] - target[n]) ** 2).sum() for n in range(3)) / 3
    assert source_loss(estimate, target) == pytest.approx(float(by_hand), rel=1e-6)
    mse = torch.nn.functional.mse_loss(estimate, target)
    assert source_loss(estimate, target) == pytest.approx(float(mse) * 4 * 5, rel=1e-6)
    with pytest.raises(ValueError, match="same"):
        source_loss(estimate, target[:, :3])


def test_resume_is_bit_exact(reference_run, tmp_path):
    ref_out, ref_metrics = reference_run
    first = train(small_config(tmp_path, max_steps=3))
    assert first["stopped"] == "max_steps" and first["step"] == 3
    second = train(resume=tmp_path / "last.pt", max_steps=6)
    assert second["step"] == 6
    assert second["val_loss"] == ref_metrics["val_loss"]
    assert_same_training_state(
        read_checkpoint(tmp_path / "last.pt"), read_checkpoint(ref_out / "last.pt")
    )
    ref_rows = [(r["step"], r["loss"], r["val_loss"]) for r in read_log(ref_out)]
    assert [(r["step"], r["loss"], r["val_loss"]) for r in read_log(tmp_path)] == ref_rows


def test_redraw_trains_on_new_draws_and_resumes_exactly(tmp_path):
    plain, whole, split = tmp_path / "plain", tmp_path / "whole", tmp_path / "split"
    train(small_config(plain, max_steps=8))  # two epochs of four steps
    train(small_config(whole, max_steps=8, redraw=True))
    train(small_config(split, max_steps=3, redraw=True))
    train(resume=split / "last.pt", max_steps=8)
    assert_same_training_state(
        read_checkpoint(split / "last.pt"), read_checkpoint(whole / "last.pt")
    )
    config = read_checkpoint(whole / "last.pt")["config"]
    assert config["train"]["redraw"] is True and config["data"]["disjoint_centres"] is True
    # Epoch 0 is draw 0: the samples of a run without redraw, so the same losses. Epoch 1
    # trains on draw 1 of its samples; validation data never change.
    rows = {r["epoch"]: (r["loss"], r["val_loss"]) for r in read_log(whole) if r["kind"] == "epoch"}
    plain_rows = {
        r["epoch"]: (r["loss"], r["val_loss"]) for r in read_log(plain) if r["kind"] == "epoch"
    }
    assert rows["0"] == plain_rows["0"]
    assert rows["1"][0] != plain_rows["1"][0]


def test_ctrl_c_saves_and_resumes_exactly(reference_run, tmp_path, monkeypatch):
    real_step = Trainer.train_step
    calls = []

    def interrupted_step(self, batch):
        calls.append(1)
        if len(calls) == 5:  # inside epoch 1, after an odd number of steps
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        train(small_config(tmp_path, max_steps=6))
    assert_stopped_at_4_and_resumes_exactly(tmp_path, reference_run, monkeypatch, real_step)


def test_sigterm_saves_and_resumes_exactly(reference_run, tmp_path, monkeypatch):
    import os
    import signal

    real_step = Trainer.train_step
    calls = []

    def terminated_step(self, batch):
        calls.append(1)
        if len(calls) == 5:  # the handler raises at the next bytecode, inside this step
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, batch)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(Trainer, "train_step", terminated_step)
    config = tmp_path / "small.toml"
    config.write_text("".join(f"{k} = {str(v).lower()}\n" for k, v in SMALL.items()))
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--config", str(config), "--out", str(out),
                 "--max-steps", "6"])  # fmt: skip
    assert code == 143
    assert signal.getsignal(signal.SIGTERM) == before
    assert_stopped_at_4_and_resumes_exactly(out, reference_run, monkeypatch, real_step)


def test_truncated_and_corrupt_checkpoints_are_refused(reference_run, tmp_path):
    data = (reference_run[0] / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt.*corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ValueError, match="garbage.pt.*corrupt or truncated"):
        load_checkpoint(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_checkpoint(empty)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a fairesi checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_for_another_head_model_is_refused(reference_run):
    from fairesi.headmodel import HeadModel

    path = reference_run[0] / "last.pt"
    with pytest.raises(ValueError, match="50 regions.*40 regions"):
        load_checkpoint(path, head_model=HeadModel.toy(n_regions=40))
    with pytest.raises(ValueError, match="48 meg channels.*42"):
        load_checkpoint(path, head_model=HeadModel.toy(n_meg=42))


def test_nan_in_data_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from fairesi import data

    real_batch = data.Synthesizer.batch
    calls = []

    def poisoned(self, split, index, draw=0):
        batch = real_batch(self, split, index, draw)
        calls.append(split)
        if calls.count("train") == 3:
            batch.x[0, 0, 0] = float("nan")
        return batch

    monkeypatch.setattr(data.Synthesizer, "batch", poisoned)
    with pytest.raises(NonFiniteError, match="NaN/Inf.*last good checkpoint"):
        train(small_config(tmp_path, max_steps=6))
    kept = read_checkpoint(tmp_path / "last.pt")
    assert kept["progress"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "train_log.csv"]


def test_diverging_loss_is_reported(tmp_path, monkeypatch):
    from fairesi.train import loop

    monkeypatch.setattr(loop, "source_loss", lambda a, b: (a - b).sum() / 0.0)
    with pytest.raises(NonFiniteError, match="diverged"):
        train(small_config(tmp_path, max_steps=2))
    assert not (tmp_path / "last.pt").exists()


def test_fresh_run_does_not_overwrite_a_previous_one(reference_run):
    out, _ = reference_run
    before = hashlib.sha256((out / "last.pt").read_bytes()).hexdigest()
    with pytest.raises(FileExistsError, match="--resume"):
        train(small_config(out, max_steps=1))
    assert hashlib.sha256((out / "last.pt").read_bytes()).hexdigest() == before


def test_new_run_never_replaces_earlier_results_unless_asked(reference_run, tmp_path):
    """Without last.pt an earlier run's best.pt and log are still results: refused, and
    --overwrite replaces them (no stale best.pt of the old run survives)."""
    out = tmp_path / "old"
    out.mkdir()
    for name in ("best.pt", "train_log.csv"):
        (out / name).write_bytes((reference_run[0] / name).read_bytes())
    with pytest.raises(
        FileExistsError, match=r"earlier run \(best.pt, train_log.csv\).*--overwrite"
    ):
        train(small_config(out, max_steps=1))
    assert (out / "best.pt").read_bytes() == (reference_run[0] / "best.pt").read_bytes()
    metrics = train(small_config(out, max_steps=1, overwrite=True))
    assert metrics["step"] == 1 and not (out / "best.pt").exists()  # no epoch ended yet
    assert [r["step"] for r in read_log(out)] == []  # the old rows are gone
    assert main(["train", "--preset", "tiny", "--out", str(out), "--max-steps", "1"]) == 2


def test_config_sources_and_validation(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("batch_size = 4\nsnr_db = -5.0\n[model_hyper]\nfoo = 3\n")
    config = TrainConfig.from_sources(
        preset="tiny", toml_path=toml, overrides={"batch_size": 2, "model_hyper": {"bar": 1}}
    )
    assert config.optim.batch_size == 2 and config.data.snr_db == -5.0
    assert config.head_model == "toy" and config.data.n_times == 64
    assert config.model_hyper == {"preset": "tiny", "foo": 3, "bar": 1}
    with pytest.raises(ValueError, match="unknown training option.*'batchsize'"):
        TrainConfig.from_sources(overrides={"batchsize": 3})
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        TrainConfig.from_sources(preset="huge")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        OptimConfig(batch_size=0)
    with pytest.raises(ValueError, match="device.*'tpu'"):
        RunConfig(device="tpu")
    with pytest.raises(ValueError, match="unknown training option.*'batchsize'"):
        TrainConfig.from_flat({"batchsize": 3})
    bad = tmp_path / "bad.toml"
    bad.write_text("batch_size = = 3")
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        TrainConfig.from_sources(toml_path=bad)


def test_resume_refuses_to_change_the_run(reference_run):
    with pytest.raises(ValueError, match=r"\['lr'\].*cannot change"):
        train(resume=reference_run[0] / "last.pt", lr=1.0)


def test_cli_help_and_short_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--preset", "--resume", "--head-model", "--bank", "--redraw", "--shared-centres"):
        assert flag in text
    common = ["--n-train-samples", "16", "--batch-size", "8", "--no-progress", "--threads", "1"]
    out = str(tmp_path / "run")
    first = ["train", "--preset", "tiny", "--out", out, "--max-steps", "1", "--shared-centres"]
    assert main([*first, *common]) == 0
    assert main(["train", "--resume", "--out", out, "--max-steps", "2", "--no-progress"]) == 0
    resumed = read_checkpoint(tmp_path / "run" / "last.pt")
    assert resumed["progress"]["step"] == 2
    assert resumed["config"]["data"]["disjoint_centres"] is False
    assert main(["train", "--resume", "--out", out, "--lr", "1"]) == 2
    assert "cannot change" in capsys.readouterr().err


def test_config_has_one_home_per_field(reference_run):
    """Every flat setting lives in exactly one section; the checkpoint stores the data
    configuration once (config["data"]) and round-trips the rest."""
    config = small_config("x", snr_db=-5.0, dataset="SimEEG", lr=0.5, max_steps=3)
    assert config.data.modality == "eeg" and config.data.n_times == 64
    assert (config.optim.lr, config.run.max_steps, config.run.out_dir) == (0.5, 3, "x")
    stored = config.to_dict()
    assert "snr_db" not in stored and "n_times" not in stored and "data" not in stored
    assert TrainConfig.from_dict(stored, config.data.to_dict()) == config
    payload = read_checkpoint(reference_run[0] / "last.pt")
    assert payload["version"] == 2
    assert load_checkpoint(reference_run[0] / "last.pt").train_config == small_config(
        reference_run[0], max_steps=6
    )


def test_checkpoint_of_format_1_loads_and_evaluates_the_same(tmp_path):
    """A checkpoint written before the train package existed (format 1: a flat
    config["train"] repeating the data fields) loads, resumes and evaluates to the metrics
    the old code wrote (tests/data: best.pt of `fairesi train --preset tiny --max-steps 6
    --n-train-samples 32 --n-val-samples 16 --batch-size 8` and its `fairesi evaluate --n
    16` per_sample.csv, both from commit 0705772)."""
    from pathlib import Path

    from fairesi.evaluate import evaluate_checkpoint

    data = Path(__file__).parent / "data"
    old = read_checkpoint(data / "checkpoint_v1_tiny.pt")
    assert old["version"] == 1 and "snr_db" in old["config"]["train"]
    config = load_checkpoint(data / "checkpoint_v1_tiny.pt").train_config
    assert config.optim.batch_size == 8 and config.n_train_samples == 32
    # Fields the old configuration predates take their defaults.
    assert config.data.to_dict() == {
        **old["config"]["data"],
        "protocol": "strict",
        "patch_growth": "rings",
        "view": None,
        "mixture": [],
    }
    result = evaluate_checkpoint(data / "checkpoint_v1_tiny.pt", n=16, progress=False)
    with open(data / "checkpoint_v1_tiny_per_sample.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for key in ("precision", "recall", "le_mm", "sd_mm", "nmse"):
        expected = [float(r[key]) for r in rows]
        assert result.per_sample[key].tolist() == pytest.approx(expected, rel=1e-6), key
    # It also resumes: two more steps under the new code.
    copy = tmp_path / "last.pt"
    copy.write_bytes((data / "checkpoint_v1_tiny.pt").read_bytes())
    metrics = train(resume=copy, max_steps=6, threads=1, progress=False)
    assert metrics["step"] == 6


def test_training_from_dataset_files_equals_training_on_the_fly(tmp_path):
    """`fairesi train --data DIR` reads what `fairesi simulate dataset` wrote: whole-split
    files give, bit for bit, the run that synthesises the same samples on the fly."""
    from fairesi.data import write_dataset

    overrides = {"n_samples": 120, "seed": 4}
    on_the_fly = small_config(tmp_path / "fly", max_steps=6, **overrides)
    train(on_the_fly)
    synth = synthesizer(on_the_fly.data, head_model="toy", bank="synthetic", seed=4)
    files = tmp_path / "files"
    for split in ("train", "val"):
        write_dataset(files / f"{split}.h5", synth, split, progress=False)
    code = main(["train", "--preset", "tiny", "--data", str(files), "--out",
                 str(tmp_path / "disk"), "--max-steps", "6", "--n-train-samples", "32",
                 "--n-val-samples", "16", "--batch-size", "8", "--checkpoint-every", "2",
                 "--threads", "1", "--no-progress"])  # fmt: skip
    assert code == 0
    from_disk = read_checkpoint(tmp_path / "disk" / "last.pt")
    assert_same_training_state(from_disk, read_checkpoint(tmp_path / "fly" / "last.pt"))
    assert from_disk["config"]["train"]["data_path"] == str(files)
    assert from_disk["config"]["data"] == on_the_fly.data.to_dict()
    # Only the training file: validation is synthesised, the same samples again.
    (files / "val.h5").unlink()
    alone = small_config(tmp_path / "alone", max_steps=6, data_path=str(files / "train.h5"))
    assert alone.data == on_the_fly.data and alone.seed == 4
    train(alone)
    assert_same_training_state(
        read_checkpoint(tmp_path / "alone" / "last.pt"),
        read_checkpoint(tmp_path / "fly" / "last.pt"),
    )
    # The files decide the data: a flag that disagrees is refused, and so is a redraw.
    with pytest.raises(ValueError, match=r"other \['snr_db'\]"):
        small_config(tmp_path / "x", data_path=str(files), snr_db=-5.0)
    with pytest.raises(ValueError, match="redraw"):
        small_config(tmp_path / "y", data_path=str(files), redraw=True)


def test_sigterm_during_the_epoch_end_commit_loses_nothing(reference_run, tmp_path, monkeypatch):
    """A SIGTERM while the epoch end updates its state (here: while it writes the log
    row) is held back until best.pt and then last.pt are written: best.pt is that epoch's
    model, the log has one row for it, and the resumed run equals an uninterrupted one."""
    import os
    import signal

    from fairesi.train.runtime import Terminated, TrainingLog

    real_write = TrainingLog.write

    def write_then_terminate(self, **row):
        real_write(self, **row)
        if row.get("kind") == "epoch":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(TrainingLog, "write", write_then_terminate)
    with pytest.raises(Terminated):
        train(small_config(tmp_path, max_steps=6))
    monkeypatch.setattr(TrainingLog, "write", real_write)
    last, best = read_checkpoint(tmp_path / "last.pt"), read_checkpoint(tmp_path / "best.pt")
    assert last["progress"]["epoch"] == 1 and last["progress"]["step"] == 4
    assert best["progress"] == last["progress"]
    assert [r["kind"] for r in read_log(tmp_path)].count("epoch") == 1
    train(resume=tmp_path / "last.pt", max_steps=6)
    assert_same_training_state(
        read_checkpoint(tmp_path / "last.pt"), read_checkpoint(reference_run[0] / "last.pt")
    )
    ref_rows = [(r["step"], r["kind"], r["val_loss"]) for r in read_log(reference_run[0])]
    assert [(r["step"], r["kind"], r["val_loss"]) for r in read_log(tmp_path)] == ref_rows


def test_user_errors_name_what_is_wrong(reference_run, tmp_path):
    """Each of these used to give a misleading message or a traceback (issue 18, 6/12)."""
    bad = tmp_path / "bad.toml"
    bad.write_text('batch_size = "eight"\n')
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 'eight'"):
        TrainConfig.from_sources(toml_path=bad)
    for threads in (0, -1):
        with pytest.raises(
            ValueError, match=f"threads must be a positive int or None, got {threads}"
        ):
            RunConfig(threads=threads)
    with pytest.raises(ValueError, match="is a directory; give its best.pt or last.pt"):
        load_checkpoint(reference_run[0])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            load_checkpoint(reference_run[0] / "last.pt", map_location="cuda")
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "fairesi-checkpoint", "obj": _Opaque()}, pickled)
    with pytest.raises(ValueError, match="safe .weights-only. load refuses") as err:
        load_checkpoint(pickled)
    assert "weights_only=False" not in str(err.value)
    text = tmp_path / "head.npz"
    text.write_text("not a head model")
    from fairesi.headmodel import HeadModel

    with pytest.raises(ValueError, match="is not a fairesi head model file"):
        HeadModel.load(text)
    assert main(["train", "--preset", "tiny", "--threads", "0", "--out", str(tmp_path / "t")]) == 2


class _Opaque:
    """A picklable object that a weights-only load refuses."""


def test_fine_tuning_starts_from_the_given_weights(tiny_run, tmp_path):
    """--init-from: a new run starts from a checkpoint's weights (model settings taken
    from it), and refuses a source of another network or trial length."""
    from fairesi.cli import main
    from fairesi.train import read_checkpoint

    source = read_checkpoint(tiny_run / "last.pt")
    out = tmp_path / "ft"
    argv = ["train", "--preset", "tiny", "--init-from", str(tiny_run / "last.pt")]
    argv += ["--max-steps", "1", "--no-progress", "--out", str(out), "--lr", "1e-12"]
    assert main(argv) == 0
    tuned = read_checkpoint(out / "last.pt")
    assert tuned["config"]["train"]["init_from"] == str(tiny_run / "last.pt")
    # Every hyper-parameter of the built network is recorded (the default reading too).
    assert tuned["config"]["model"]["resolved"]["refine_residual"] is True
    for key, value in source["state_dict"].items():  # one step at lr 1e-12: unchanged
        torch.testing.assert_close(tuned["state_dict"][key], value, rtol=1e-6, atol=1e-9)
    scratch = tmp_path / "scratch"
    assert main([*argv[:3], "--max-steps", "1", "--no-progress", "--out", str(scratch)]) == 0
    fresh = read_checkpoint(scratch / "last.pt")["state_dict"]
    assert any(not torch.equal(fresh[k], v) for k, v in source["state_dict"].items())
    config = TrainConfig.from_sources(
        preset="tiny",
        overrides={"init_from": str(tiny_run / "last.pt"), "out_dir": str(tmp_path / "bad")},
    )
    bad = config.replace(max_steps=1)
    bad = dataclasses.replace(bad, model_hyper={"preset": "tiny", "embed_dim": 4})
    with pytest.raises(ValueError, match=r"another network.*embed_dim"):
        train(bad)
    with pytest.raises(ValueError, match="samples per trial"):
        train(dataclasses.replace(config, data=dataclasses.replace(config.data, n_times=32)))


# -- train_instants: per-instant networks trained on K samples of each window -------------


def test_instant_loss_is_the_scaled_loss_of_the_drawn_samples(tmp_path):
    trainer = Trainer(small_config(tmp_path, model="convdip", train_instants=8)).setup()
    try:
        batch = next(trainer.batches("train", 0, 0))
        n_batch, n_times = batch.x.shape[0], batch.x.shape[-1]
        instants = trainer._draw_instants(batch)
        assert instants.shape == (n_batch, 8)
        assert (instants.diff(dim=1) > 0).all()  # distinct, sorted
        assert instants.min() >= 0 and instants.max() < n_times
        trainer.net.eval()
        with torch.no_grad():
            error = (trainer.net(batch.x) - batch.target).square().sum(1)  # (B, T)
            want = error.gather(1, instants).sum() / n_batch * n_times / 8
            torch.testing.assert_close(trainer._loss(batch, instants), want)
            every = torch.arange(n_times).expand(n_batch, -1)
            torch.testing.assert_close(trainer._loss(batch, every), trainer._loss(batch))
            # Uniform draws: the mean over many steps is the whole-window loss.
            draws = torch.stack(
                [error.gather(1, trainer._draw_instants(batch)).sum() for _ in range(4000)]
            )
            mean, whole = draws.mean() * n_times / 8, error.sum()
            assert abs(mean - whole) < 4 * draws.std() * n_times / 8 / 4000**0.5
    finally:
        trainer.cleanup()


def test_train_instants_records_and_resumes_exactly(tmp_path):
    conv = {"model": "convdip", "train_instants": 16}
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(small_config(whole, max_steps=6, **conv))
    train(small_config(split, max_steps=3, **conv))
    train(resume=split / "last.pt", max_steps=6)
    assert_same_training_state(
        read_checkpoint(split / "last.pt"), read_checkpoint(whole / "last.pt")
    )
    assert read_checkpoint(whole / "last.pt")["config"]["train"]["train_instants"] == 16
    with pytest.raises(ValueError, match=r"\['train_instants'\].*cannot change"):
        train(resume=whole / "last.pt", train_instants=8)


def test_train_instants_is_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(ValueError, match="train_instants .65. must be at most.*n_times .64."):
        small_config(tmp_path, model="convdip", train_instants=65)
    with pytest.raises(ValueError, match="train_instants must be a positive int"):
        small_config(tmp_path, model="convdip", train_instants=0)
    with pytest.raises(ValueError, match="fair_esi reads whole windows"):
        train(small_config(tmp_path, train_instants=8))
    argv = ["train", "--preset", "tiny", "--train-instants", "8", "--max-steps", "1"]
    assert main([*argv, "--no-progress", "--out", str(tmp_path / "cli")]) == 2


def test_wide_preset_is_cpu_with_fair_esi_wide_size():
    """`--preset wide` differs from 'cpu' only in FAIR-ESI's size preset (rank 512); a
    model without a 'wide' size is refused by name."""
    from fairesi.headmodel import HeadModel
    from fairesi.models import build_model

    wide, cpu = TrainConfig.from_sources(preset="wide"), TrainConfig.from_sources(preset="cpu")
    assert wide.model_hyper == {"preset": "wide"}
    assert wide.replace(model_hyper={"preset": "cpu"}) == cpu
    head = HeadModel.toy(n_regions=60)
    model = build_model("fair_esi", head, "meg", 64, **wide.model_hyper)
    assert model.config.gru_hidden == 256
    with pytest.raises(ValueError, match="'wide'"):
        build_model("convdip", head, "meg", 64, **wide.model_hyper)


def test_anneal_steps_decays_the_lr_to_zero_and_resumes_exactly(tmp_path, monkeypatch):
    """The last `anneal_steps` steps before max_steps decay the LR linearly to zero from
    its value when the decay begins; a run interrupted inside the decay resumes exactly."""
    real_step = Trainer.train_step
    lrs: list[float] = []

    def recording_step(self, batch):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        if len(lrs) == 19:  # the 9th step of the second run: inside its decay
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", recording_step)
    controls = dict(max_steps=10, anneal_steps=4, lr=1e-3, lr_patience=100)
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(small_config(whole, **controls))
    assert lrs == pytest.approx([1e-3] * 6 + [1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rel=1e-12)
    assert read_checkpoint(whole / "last.pt")["progress"]["anneal_base_lr"] == 1e-3
    with pytest.raises(KeyboardInterrupt):
        train(small_config(split, **controls))
    assert read_checkpoint(split / "last.pt")["progress"]["step"] == 8
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train(resume=split / "last.pt")
    assert_same_training_state(
        read_checkpoint(split / "last.pt"), read_checkpoint(whole / "last.pt")
    )
    with pytest.raises(ValueError, match="anneal_steps needs max_steps"):
        small_config(tmp_path / "bad", anneal_steps=3)


def test_cpu_bf16_runs_the_forward_under_bfloat16_autocast(tmp_path):
    seen = []

    def record(module, args, output):
        seen.append((torch.is_autocast_enabled("cpu"), output.dtype))

    for bf16 in (False, True):
        trainer = Trainer(small_config(tmp_path / str(bf16), cpu_bf16=bf16)).setup()
        try:
            hook = trainer.model.register_forward_hook(record)
            batch = next(trainer.batches("train", 0, 0))
            loss = trainer.train_step(batch)
            hook.remove()
            assert math.isfinite(loss)
            assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
        finally:
            trainer.cleanup()
    assert seen == [(False, torch.float32), (True, torch.bfloat16)]


def test_keep_heap_keeps_freed_memory_on_the_cpu(tmp_path, monkeypatch):
    from fairesi.train import loop

    calls = []
    monkeypatch.setattr(loop, "keep_freed_memory", lambda: calls.append(1) or True)
    for keep in (True, False):
        Trainer(small_config(tmp_path / str(keep), keep_heap=keep)).setup().cleanup()
    assert calls == [1]
    assert RunConfig().keep_heap
    args = build_parser().parse_args(["train", "--release-memory"])
    assert args.keep_heap is False
