"""Extending physai: a new stage is its module plus its name in a pipeline config; nothing else to edit."""

from __future__ import annotations

import pytest

import physai.stages
from physai.core.errors import ConfigError
from physai.run.pipeline import check_stages
from physai.stages import known_stages

STAGE = '''"""Counts the evaluation's episodes (a stage written by a user)."""
REQUIRES = ["summary:eval"]
PRODUCES = ["summary:episode_count"]


def run(cfg, ctx):
    figures = {"episodes": len(ctx.summary()["eval"]["episode_returns"])}
    ctx.record("episode_count", figures)
    return figures
'''


@pytest.fixture
def user_stage(tmp_path, monkeypatch):
    (tmp_path / "episode_count.py").write_text(STAGE)
    monkeypatch.setattr(physai.stages, "__path__", [*physai.stages.__path__, str(tmp_path)])
    return "episode_count"


def test_a_stage_module_is_a_known_stage_and_takes_its_place_by_its_contract(user_stage):
    assert user_stage in known_stages()
    check_stages(["train", "evaluate", user_stage, "report"])
    with pytest.raises(ConfigError, match="runs 'episode_count' before 'evaluate'"):
        check_stages(["train", user_stage, "evaluate"])


def test_an_unknown_stage_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown stage 'episode_count'; known stages: \['collect', "):
        check_stages(["train", "episode_count"])
