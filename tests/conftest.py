"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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


BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="session")
def bench_script():
    """Loader of a script of ``bench/`` as a module: ``bench_script("refine_study")``.
    ``bench/`` is on ``sys.path`` while it loads, as when the script is run, so a script
    may import its neighbours."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_script", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(BENCH))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(BENCH))
        return module

    return load
