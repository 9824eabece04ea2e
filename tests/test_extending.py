"""Extending physai: a new stage is its module plus its name in a pipeline config; nothing else to edit."""

from __future__ import annotations

import pytest

import physai.stages
from physai.core.errors import ConfigError
from physai.core.io import read_summary, update_summary
from physai.run.pipeline import RunContext, check_stages
from physai.run.tracking import NullTracker
from physai.stages import known_stages, stage_module

STAGE = '''"""Counts the evaluation's episodes (a stage written by a user)."""
from typing import TypedDict


class EpisodeCountSummary(TypedDict):
    episodes: int


REQUIRES = ["summary:eval"]
PRODUCES = ["summary:episode_count"]
SUMMARY = EpisodeCountSummary


def run(cfg, ctx):
    figures = EpisodeCountSummary(episodes=len(ctx.summary()["eval"]["episode_returns"]))
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


def test_a_stage_records_the_section_its_summary_declares_and_nothing_else(user_stage, tmp_path):
    run_dir = tmp_path / "run"
    update_summary(run_dir, "eval", {"episode_returns": [1.0, 2.0, 3.0]})
    ctx = RunContext(run_dir=run_dir, cfg=None, tracker=NullTracker())
    assert stage_module(user_stage).run(None, ctx) == {"episodes": 3}
    assert read_summary(run_dir)["episode_count"] == {"episodes": 3}
    with pytest.raises(TypeError, match=r"'episode_count'.*EpisodeCountSummary: missing keys \['episodes'\], "
                                        r"undeclared keys \['episode'\]"):
        ctx.record("episode_count", {"episode": 4})
    assert read_summary(run_dir)["episode_count"] == {"episodes": 3}  # the refused record wrote nothing


def test_a_stage_that_produces_an_untyped_section_is_refused_before_anything_runs(tmp_path, monkeypatch):
    (tmp_path / "untyped_count.py").write_text(STAGE.replace("SUMMARY = EpisodeCountSummary", "")
                                               .replace("episode_count", "untyped_count"))
    monkeypatch.setattr(physai.stages, "__path__", [*physai.stages.__path__, str(tmp_path)])
    with pytest.raises(ConfigError, match=r"stage 'untyped_count' produces \['summary:untyped_count'\] but "
                                          r"declares no SUMMARY"):
        check_stages(["train", "evaluate", "untyped_count"])
