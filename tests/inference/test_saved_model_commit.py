"""Where a figure's code came from, also on a copied tree with no ``.git`` or a stale one."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectkit.inference.saved_model import git_commit


def test_outside_git_the_commit_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("DEFECTKIT_COMMIT", raising=False)
    assert git_commit(tmp_path) is None
    monkeypatch.setenv("DEFECTKIT_COMMIT", "abc1234")
    assert git_commit(tmp_path) == "abc1234"


def test_a_named_commit_wins_over_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copied ``.git`` can be stale: the caller who names the commit knows better."""
    monkeypatch.setenv("DEFECTKIT_COMMIT", "abc1234")
    assert git_commit(Path(__file__).parent) == "abc1234"
