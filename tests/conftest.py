"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from fairesi.headmodel import HeadModel


@pytest.fixture(scope="session")
def toy_head_model() -> HeadModel:
    """The 50-region synthetic head model (32 EEG, 48 MEG channels), shared read-only."""
    return HeadModel.toy()
