"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from fairesi.headmodel import HeadModel


@pytest.fixture(scope="session")
def toy_head_model() -> HeadModel:
    """The 50-region synthetic head model (32 EEG, 48 MEG channels), shared read-only."""
    return HeadModel.toy()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One short 'tiny' training run (toy head model, synthetic bank, 2 steps = one epoch,
    so both best.pt and last.pt exist), shared read-only by every test module that needs a
    trained checkpoint. Returns its output directory."""
    from fairesi.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    overrides = {
        "out_dir": str(out),
        "n_train_samples": 16,
        "n_val_samples": 8,
        "batch_size": 8,
        "max_steps": 2,
        "threads": 1,
        "progress": False,
    }
    train(TrainConfig.from_sources(preset="tiny", overrides=overrides))
    return out
