"""atomic_path: the target is replaced whole on success and untouched on failure."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from unet_monai.io.atomic import atomic_path, remove_stale_temporaries


def test_success_replaces_the_target(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_the_old_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_remove_stale_temporaries_takes_only_the_targets_own(tmp_path):
    target = tmp_path / "last.pt"
    target.write_text("complete")
    fd, name = tempfile.mkstemp(prefix=".last.pt.", suffix=".tmp", dir=tmp_path)  # atomic_path's name, left by a kill
    os.close(fd)
    others = [tmp_path / ".model.pt.abcdefgh.tmp", tmp_path / ".last.pt.notes.txt", tmp_path / "last.pt.abcdefgh.tmp"]
    for path in others:
        path.write_text("not ours")
    assert remove_stale_temporaries(target) == [Path(name)]
    assert not Path(name).exists() and target.read_text() == "complete" and all(p.exists() for p in others)
    assert remove_stale_temporaries(target) == []
    assert remove_stale_temporaries(tmp_path / "missing" / "last.pt") == []
