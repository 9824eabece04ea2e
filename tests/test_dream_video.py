"""The dream-vs-real video: a real cartpole episode replayed beside a (tiny) world model's open-loop dream."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from conftest import require_rendering
from physai.envs import rendering
from physai.report.dream_video import open_loop_dream, record_dream_vs_real
from physai.envs.gym_task import GymTask
from physai.envs.registry import packaged_task_configs
from physai.synthetic.collect import random_action_episodes
from physai.synthetic.dataset import ProvenanceTables, read_dataset, write_dataset
from physai.synthetic.world_model import EnsembleDynamicsModel
from physai.report.video import NoVideo

ENV_ID = "physai/CartpoleBalance-v0"


@pytest.fixture(scope="module")
def cartpole_case(tmp_path_factory):
    """A real dataset of a few random-action cartpole episodes and a tiny ensemble fit on it."""
    task = GymTask(id=ENV_ID, task=packaged_task_configs()["cartpole_balance"]["task"])
    episodes, observation_space, action_space = random_action_episodes(task, 100, seed=7)  # the pole falls after 20-50 steps
    assert 2 <= len(episodes) <= 3, [len(e) for e in episodes]
    _, context_names = task.signal_names()
    directory = tmp_path_factory.mktemp("dream") / "real"
    write_dataset(directory, episodes, dataset_id="physai-CartpoleBalance/real-v0", kind="real", task_id=ENV_ID,
                  observation_space=observation_space, action_space=action_space,
                  provenance_tables=ProvenanceTables(context_names=tuple(context_names)))
    data = read_dataset(directory, expected_task_id=ENV_ID)
    rows = data.transitions
    model = EnsembleDynamicsModel(rows.obs.shape[1], rows.act.shape[1], context_names=context_names, members=3,
                                  elites=2, hidden=32, layers=2, seed=0)
    model.fit(rows.obs, rows.act, rows.next_obs, rows.reward, rows.terminated, rows.context, max_epochs=5,
              batch_size=64, progress=False, rng_seed=0)
    return task, model, data


def test_dream_video_shows_the_replayed_episode_beside_the_dream(cartpole_case, tmp_path, caplog):
    require_rendering()
    import imageio.v2 as imageio

    task, model, data = cartpole_case
    steps = 25
    lengths = [len(data.episode(i)) for i in range(data.num_episodes)]
    chosen = next((length for length in lengths if length >= steps), max(lengths))
    expected_frames = min(steps, chosen + 1)
    target = tmp_path / "report" / "dream.mp4"

    with caplog.at_level(logging.WARNING, logger="physai.report.dream_video"):
        assert record_dream_vs_real(task, model, data, target, steps=steps) == str(target)
    # The seeded replay reproduces the recorded observations, so nothing is warned about.
    assert not [r for r in caplog.records if "departs" in r.getMessage()], caplog.text

    assert target.is_file() and target.stat().st_size > 0
    assert not list(target.parent.glob(".dream.mp4.*")), "the atomic write left its temporary file"
    env = task.make(render_mode="rgb_array")
    env.reset(seed=0)
    render_height, render_width = env.render().shape[:2]
    fps = env.metadata["render_fps"]
    env.close()
    reader = imageio.get_reader(target, format="FFMPEG")
    try:
        frames = [frame for frame in reader]
        assert reader.get_meta_data()["fps"] == pytest.approx(fps)
    finally:
        reader.close()
    assert len(frames) == expected_frames
    height, width = frames[0].shape[:2]
    assert abs(width - 2 * render_width) <= 16 and abs(height - render_height) <= 8
    # The right half is a plot (mostly white); the cursor moves, so the panel changes from frame to frame.
    first, middle = frames[0][:, width // 2:].astype(int), frames[len(frames) // 2][:, width // 2:].astype(int)
    assert first.mean() > 180
    assert np.abs(first - middle).max() > 100


def test_open_loop_dream_starts_at_the_real_state_and_its_band_grows(cartpole_case):
    _, model, data = cartpole_case
    episode = max(data.episodes(), key=len)
    dream = open_loop_dream(model, episode.observations[0], episode.actions[:20], episode.context[:20])
    assert dream.mean.shape == dream.std.shape == (21, episode.observations.shape[1])
    np.testing.assert_allclose(dream.mean[0], episode.observations[0], rtol=0, atol=1e-6)
    assert np.all(dream.std[0] == 0)
    assert np.all(np.isfinite(dream.mean)) and np.all(np.diff(dream.std, axis=0) >= 0)


def test_a_replay_that_departs_from_the_record_is_warned_about(cartpole_case, tmp_path, caplog):
    require_rendering()
    task, model, data = cartpole_case
    wrong_seeds = dataclasses.replace(data, episode_seeds=[seed + 1000 for seed in data.episode_seeds])
    with caplog.at_level(logging.WARNING, logger="physai.report.dream_video"):
        record_dream_vs_real(task, model, wrong_seeds, tmp_path / "dream.mp4", steps=5)
    assert "departs from the recorded observations" in caplog.text


def test_a_failed_render_means_no_video_and_no_second_attempt(cartpole_case, tmp_path, monkeypatch):
    task, model, data = cartpole_case
    # The failure switches rendering off for this process; monkeypatch restores it for later tests.
    monkeypatch.setattr(rendering, "_reason_unavailable", None)
    monkeypatch.setattr(rendering, "_decided", True)
    made = []

    class NoGLEnv:
        metadata = {"render_fps": 50}

        def __init__(self, env):
            self.env = env

        def reset(self, **kwargs):
            return self.env.reset(**kwargs)

        def render(self):
            raise AttributeError("'NoneType' object has no attribute 'glGetError'")  # what MuJoCo raises without GL

        def close(self):
            self.env.close()

    class NoGLTask:
        id = task.id

        def make(self, render_mode=None):
            made.append(render_mode)
            return NoGLEnv(task.make())

        def signal_names(self):
            return task.signal_names()

    target = tmp_path / "dream.mp4"
    with pytest.raises(NoVideo, match="off-screen rendering failed .AttributeError: 'NoneType' object has no "
                                      "attribute 'glGetError'"):
        record_dream_vs_real(NoGLTask(), model, data, target, steps=10)
    assert not target.exists() and not list(tmp_path.iterdir())
    # A second GL start after a failed one can abort the process: later videos are refused without trying.
    with pytest.raises(NoVideo, match="off-screen rendering failed"):
        record_dream_vs_real(NoGLTask(), model, data, target, steps=10)
    assert made == ["rgb_array"]
