"""bench/gpu_train.sh, dry-run on the CPU (tiny preset, seconds of training): every step
runs, the outputs are there and no file is over 16 MiB; the packed checkpoint joins and
evaluates."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.filterwarnings("ignore:using the analytic stand-in")
def test_gpu_train_script_dry_run_on_cpu(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "SKIP_BUILD": "1",
        "DEVICE": "cpu",
        "PYTHON": sys.executable,
        "BANK": "synthetic",
        "TRAIN_ARGS": "--preset tiny --n-train-samples 16 --n-val-samples 8 --batch-size 8 "
        "--threads 1",
        "TRAIN_MINUTES": "0.1",
        "N_EVAL": "8",
        "JOBS": "1",
    }
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_train.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = {p.name for p in out.iterdir()}
    for name in ("env.txt", "train.log", "train_log.csv", "metrics_paper.md", "metrics_paper.json",
                 "metrics_strict.md", "metrics_strict.json", "best.pt.sha256"):  # fmt: skip
        assert name in names, name
    assert "paper protocol (rule deepsif)" in (out / "metrics_paper.md").read_text()
    assert "strict protocol (rule abs)" in (out / "metrics_strict.md").read_text()
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir() if p.is_file())
    parts = sorted(out.glob("best.pt.part-*"))
    joined = tmp_path / "best.pt"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    digest = (out / "best.pt.sha256").read_text().split()[0]
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == digest
    from fairesi.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(joined, n=4, progress=False)
    assert result.protocol == "paper" and result.per_sample["nmse"].shape == (4,)
