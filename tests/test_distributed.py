"""torchrun with 2 CPU ranks (gloo): the same training as one process with the same global
batch, to float tolerance, and checkpoints that resume on 1 or 2 ranks (issue 19)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

COMMON = ["--preset", "tiny", "--n-train-samples", "32", "--n-val-samples", "16",
          "--batch-size", "8", "--threads", "1", "--no-progress"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(args: list[str], ranks: int) -> None:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
         "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "fairesi"]
        if ranks > 1
        else [sys.executable, "-m", "fairesi"]
    )  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, "train", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_close(a, b) -> None:
    """Equal to float tolerance. The attention's key bias is left out: it adds the same
    number to every score of a query row, which the softmax cancels, so its exact gradient
    is zero and Adam turns the rounding noise of its gradient (which depends on how the
    ranks sum) into full-size steps."""
    assert a.keys() == b.keys()
    for key in a:
        if key.endswith("attention.key.bias"):
            continue
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.filterwarnings("ignore:using the analytic stand-in")
def test_two_ranks_train_like_one_process_and_resume_anywhere(tmp_path):
    _train([*COMMON, "--max-steps", "3", "--out", str(tmp_path / "two")], ranks=2)
    _train([*COMMON, "--max-steps", "3", "--out", str(tmp_path / "one")], ranks=1)
    _assert_close(_weights(tmp_path / "two" / "last.pt"), _weights(tmp_path / "one" / "last.pt"))
    # Uninterrupted reference to step 6 (an epoch end at step 4 on the way).
    _train(["--resume", str(tmp_path / "one" / "last.pt"), "--max-steps", "6", "--no-progress",
            "--out", str(tmp_path / "one")], ranks=1)  # fmt: skip
    reference = _weights(tmp_path / "one" / "last.pt")
    for ranks in (1, 2):
        out = tmp_path / f"resumed-on-{ranks}"
        out.mkdir()
        (out / "last.pt").write_bytes((tmp_path / "two" / "last.pt").read_bytes())
        (out / "train_log.csv").write_bytes((tmp_path / "two" / "train_log.csv").read_bytes())
        _train(["--resume", str(out / "last.pt"), "--max-steps", "6", "--no-progress",
                "--out", str(out)], ranks=ranks)  # fmt: skip
        _assert_close(_weights(out / "last.pt"), reference)
        assert torch.load(out / "last.pt", weights_only=True)["progress"]["step"] == 6
