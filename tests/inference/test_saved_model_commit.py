"""Where a figure's code came from, also on a copied tree that has no ``.git``."""

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


def test_inside_git_the_environment_does_not_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEFECTKIT_COMMIT", raising=False)
    if git_commit(Path(__file__).parent) is None:
        pytest.skip("the tests run outside a git checkout")
    monkeypatch.setenv("DEFECTKIT_COMMIT", "not-a-commit")
    assert git_commit(Path(__file__).parent) != "not-a-commit"
