"""Atomic writes and the CLI dispatcher."""

import os
import stat
import subprocess
import sys

import pytest

from fairesi.cli import main
from fairesi.io import atomic_path


def test_atomic_path_moves_complete_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("complete")
        assert not target.exists()
    assert target.read_text() == "complete"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_path_follows_umask(tmp_path):
    target = tmp_path / "out.txt"
    umask = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_refuses_overwrite(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError, match="out.txt"), atomic_path(target, overwrite=False):
        pass


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "COMMAND" in out


def test_cli_without_command_fails():
    assert main([]) == 2


def test_module_entry_point():
    res = subprocess.run(
        [sys.executable, "-m", "fairesi", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0
    assert res.stdout.startswith("fairesi ")


def test_an_output_that_is_an_input_is_refused(tmp_path):
    from fairesi.io import check_not_an_input

    source = tmp_path / "bank.h5"
    source.write_bytes(b"x")
    (tmp_path / "link.h5").symlink_to(source)
    for spelling in (source, tmp_path / "." / "bank.h5", tmp_path / "link.h5"):
        with pytest.raises(ValueError, match="is the input --bank"):
            check_not_an_input(spelling, {"--bank": source})
    check_not_an_input(tmp_path / "other.h5", {"--bank": source, "--head-model": None})
    # The CLI refuses before doing any work, with one line and exit 2.
    from fairesi.cli import main

    assert main(["export", str(source), "-o", str(tmp_path / "link.h5")]) == 2
    assert source.read_bytes() == b"x"


def test_parts_of_killed_writers_are_removed(tmp_path):
    """A writer killed mid-write leaves .NAME.PID.*.part; the next write of the same output
    removes it, but never the part of a writer that still runs (issue 18, case 8)."""
    target = tmp_path / "data.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".data.h5.{int(dead.stdout)}.abc123.part"
    stale.write_bytes(b"half a file")
    alive = tmp_path / f".data.h5.{os.getppid()}.def456.part"
    alive.write_bytes(b"still being written")
    other = tmp_path / f".other.h5.{int(dead.stdout)}.x.part"
    other.write_bytes(b"another output's")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done"
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_second_writer_of_one_output_is_refused(tmp_path, capsys):
    """One writer per output: a second one is told which process holds it (issue 18, case
    10); the lock goes when the writer is done."""
    from fairesi.io import exclusive_output

    out = tmp_path / "data.h5"
    with exclusive_output(out):
        with pytest.raises(ValueError, match=f"is being written by process {os.getpid()}"):
            with exclusive_output(out):
                pass
        # The CLI writers take the same lock, before any work.
        (tmp_path / "a.h5").write_bytes(b"")
        assert main(["simulate", "merge", str(tmp_path / "a.h5"), "--out", str(out)]) == 2
        assert "is being written by process" in capsys.readouterr().err
    (tmp_path / "a.h5").unlink()
    with exclusive_output(out):  # free again
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []
