"""docs/own-montage.md: every documented command parses with the real CLI, and the route
block runs, in order, at toy size (a 16-channel EEG forward on a small synthetic subject
with an 8-octant 'aparc' per hemisphere, a quick bank, a few training steps)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import mne
import numpy as np
import pytest

from _toy_subjects import eeg_forward, write_annot, write_subject
from fairesi.cli import build_parser, main
from fairesi.headmodel import HeadModel

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-montage.md"
ROUTE_MARK = "<!-- route:"


def _bash_blocks() -> list[tuple[bool, list[list[str]]]]:
    """(is the route block, fairesi command lines as argv) of every ```bash block."""
    text = DOC.read_text()
    blocks = []
    for match in re.finditer(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        before = text[: match.start()].rstrip().splitlines()[-1]
        body = match.group(1).replace("\\\n", " ")
        commands = [shlex.split(line) for line in body.splitlines() if line.startswith("fairesi ")]
        blocks.append((before.startswith(ROUTE_MARK), commands))
    return blocks


def test_every_documented_command_parses():
    blocks = _bash_blocks()
    assert sum(route for route, _ in blocks) == 1
    commands = [argv for _, block in blocks for argv in block]
    assert len(commands) >= 10
    documented = set()
    for argv in commands:
        assert argv[0] == "fairesi"
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit as err:  # argparse: unknown flag, bad choice, missing value
            pytest.fail(f"{shlex.join(argv)} does not parse (exit {err.code})")
        assert callable(args.func), shlex.join(argv)
        documented.add(" ".join(argv[1:3]) if argv[1] in ("headmodel", "simulate") else argv[1])
    assert {
        "headmodel from-forward",
        "simulate bank",
        "train",
        "export",
        "localize",
    } <= documented


# What makes each command of the route toy-sized; argparse keeps the last value given.
TOY_FLAGS = {
    "headmodel": ["--parcellation", "aparc", "--subjects-dir", "subjects"],
    "simulate": ["--quick", "--threads", "1", "--no-progress"],
    "train": [
        "--preset",
        "tiny",
        "--max-steps",
        "4",
        "--n-samples",
        "240",
        "--n-train-samples",
        "32",
        "--n-val-samples",
        "16",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--no-progress",
    ],
    "export": [],
    "localize": ["--no-progress"],
}


def test_route_runs_at_toy_size(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SUBJECTS_DIR", raising=False)
    # Step 1 of the doc (MNE), on a synthetic subject instead of fsaverage.
    subjects_dir = tmp_path / "subjects"
    write_subject(subjects_dir, "subj", 3, 30.0)
    write_annot(subjects_dir, "subj", "aparc", grade=3)
    fwd = eeg_forward(subjects_dir, "subj", "all")
    mne.write_forward_solution("my-fwd.fif", fwd, verbose="error")
    ch_names = fwd["info"]["ch_names"]
    rng = np.random.default_rng(0)
    raw = mne.io.RawArray(
        1e-6 * rng.normal(size=(len(ch_names), 1000)),
        mne.create_info(ch_names, 500.0, "eeg"),
        verbose="error",
    )
    raw.save("my_raw.fif", verbose="error")

    (route,) = [commands for is_route, commands in _bash_blocks() if is_route]
    assert [argv[1] for argv in route] == ["headmodel", "simulate", "train", "export", "localize"]
    for argv in route:
        code = main([*argv[1:], *TOY_FLAGS[argv[1]]])
        assert code == 0, f"{shlex.join(argv)}: {capsys.readouterr().err}"

    head = HeadModel.load("head.npz")
    assert head.n_regions == 16 and head.lead_field("eeg").ch_names == ch_names
    lines = Path("mine-regions.csv").read_text().splitlines()
    assert lines[0].startswith("region,") and len(lines) == 1 + head.n_regions
    assert [line.split(",", 1)[0] for line in lines[1:]] == head.region_names
    values = np.array([line.split(",")[1:] for line in lines[1:]], dtype=float)
    assert values.shape == (16, 1000) and np.isfinite(values).all() and values.any()
