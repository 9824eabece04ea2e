"""Transition datasets: Minari layout, provenance round trip, checksums, refusals, crash-safe writes."""

from __future__ import annotations

import hashlib
import json
import os
import sys

import h5py
import numpy as np
import pytest
from gymnasium import spaces

import physai.synthetic.dataset.storage as dataset_module
from physai.synthetic.dataset import (PROVENANCE_COLUMNS, SOURCE_REAL, SOURCE_SYNTHETIC, DatasetError, Episode,
                                      ProvenanceTables, TransitionBatch, dataset_info, format_dataset_info,
                                      read_dataset, write_dataset)

OBS_SPACE = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
ACT_SPACE = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
TABLES = ProvenanceTables(model_hashes=("sha256:aaaa1111", "sha256:bbbb2222"),
                          scenario_names=("icy_floor", "heavy_payload"), context_names=("friction", "mass_scale"))
REAL_LENGTHS = (6, 4)  # auto-assigned state ids: episode 0 -> 0..5, episode 1 -> 6..9


def real_episode(rng, steps, env_index, seed, truncated=True):
    truncations = np.zeros(steps, bool)
    truncations[-1] = truncated
    return Episode.real(rng.normal(size=(steps + 1, 3)), rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                        rng.normal(size=steps), np.zeros(steps, bool), truncations, env_index=env_index, seed=seed,
                        context=rng.uniform(0.5, 1.5, 2))


def synthetic_episode(rng, steps, seed, parent, model_index=0, scenario=0):
    terminations = np.zeros(steps, bool)
    terminations[-1] = True
    return Episode.synthetic(rng.normal(size=(steps + 1, 3)), rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                             rng.normal(size=steps), terminations, np.zeros(steps, bool), seed=seed,
                             parent_state_id=parent, model_index=model_index, scenario=scenario,
                             uncertainty=rng.uniform(0.01, 0.5, steps).astype(np.float32))


def mixed_episodes(seed=0):
    rng = np.random.default_rng(seed)
    return [real_episode(rng, REAL_LENGTHS[0], env_index=0, seed=100),
            real_episode(rng, REAL_LENGTHS[1], env_index=1, seed=101),
            synthetic_episode(rng, 3, seed=7, parent=2, scenario=0),
            synthetic_episode(rng, 2, seed=8, parent=7, model_index=1, scenario=1),
            synthetic_episode(rng, 3, seed=9, parent=-1, scenario=-1)]


def write(directory, episodes, **overrides):
    kwargs = dict(dataset_id="physai/test-mixed-v0", kind="mixed", task_id="physai/Toy-v0",
                  observation_space=OBS_SPACE, action_space=ACT_SPACE, provenance_tables=TABLES,
                  generator_info={"model_id": "ensemble-5", "policy": "sac checkpoint step_1000", "seeds": [7, 8, 9]})
    kwargs.update(overrides)
    return write_dataset(directory, episodes, **kwargs)


def assert_same_episode(read, written, expected_state_id=None):
    for name in ("observations", "actions", "rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(getattr(read, name), getattr(written, name), err_msg=name)
    assert read.source == written.source and read.seed == written.seed
    for name in PROVENANCE_COLUMNS:
        expected = expected_state_id if name == "state_id" and expected_state_id is not None else written.column(name)
        np.testing.assert_array_equal(read.column(name), expected, err_msg=name)
    if written.context is None:
        assert read.context is None
    else:
        np.testing.assert_array_equal(read.context, written.context)


def test_real_and_synthetic_episodes_round_trip_with_provenance(tmp_path):
    episodes = mixed_episodes()
    write(tmp_path / "ds", episodes)
    loaded = read_dataset(tmp_path / "ds", expected_task_id="physai/Toy-v0", observation_space=OBS_SPACE,
                          action_space=ACT_SPACE)

    assert loaded.num_episodes == 5 and loaded.kind == "mixed" and loaded.task_id == "physai/Toy-v0"
    assert loaded.observation_space == OBS_SPACE and loaded.action_space == ACT_SPACE
    assert loaded.provenance_tables.model_hashes == TABLES.model_hashes
    assert loaded.provenance_tables.context_names == TABLES.context_names
    assert loaded.provenance_tables.parent_dataset_id == "physai/test-mixed-v0"  # holds its own real states
    first_id = 0
    for index, written in enumerate(episodes):
        expected_ids = None
        if written.source == SOURCE_REAL:
            expected_ids = np.arange(first_id, first_id + len(written))
            first_id += len(written)
        assert_same_episode(loaded.episode(index), written, expected_ids)

    flat = loaded.transitions
    assert len(flat) == sum(map(len, episodes)) == loaded.metadata["total_steps"]
    assert (flat.source == SOURCE_REAL).sum() == sum(REAL_LENGTHS)
    real = flat.select(flat.source == SOURCE_REAL)
    synthetic = flat.select(flat.source == SOURCE_SYNTHETIC)
    np.testing.assert_array_equal(real.state_id, np.arange(10))
    assert set(synthetic.parent_state_id) == {2, 7, -1} and set(real.parent_state_id) == {-1}
    np.testing.assert_array_equal(synthetic.branch_depth, [1, 2, 3, 1, 2, 1, 2, 3])
    assert np.isnan(real.uncertainty).all() and np.isfinite(synthetic.uncertainty).all()
    assert flat.context.shape == (len(flat), 2) and np.isnan(synthetic.context).all()
    np.testing.assert_array_equal(flat.episode_index, np.repeat(np.arange(5), [6, 4, 3, 2, 3]))
    # A branch's parent id leads back to the real transition it started from.
    parent_row = np.flatnonzero(flat.state_id == 7)[0]
    assert flat.episode_index[parent_row] == 1 and flat.step_index[parent_row] == 1
    assert loaded.metadata["generator"]["model_id"] == "ensemble-5"


def test_layout_is_the_one_minari_reads(tmp_path):
    episodes = mixed_episodes()
    target = write(tmp_path / "ds", episodes)
    data = target / "data"
    assert sorted(p.name for p in data.iterdir()) == ["main_data.hdf5", "metadata.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging or temp leftovers

    with h5py.File(data / "main_data.hdf5", "r") as file:
        assert list(file.keys()) == [f"episode_{i}" for i in range(5)]
        assert file.attrs["total_episodes"] == 5 and file.attrs["total_steps"] == 18
        assert file.attrs["dataset_id"] == "physai/test-mixed-v0" and file.attrs["minari_version"] == "0.5.4"
        assert json.loads(file.attrs["observation_space"])["type"] == "Box"
        assert json.loads(file.attrs["scenario_names"]) == ["icy_floor", "heavy_payload"]
        for index, written in enumerate(episodes):
            group = file[f"episode_{index}"]
            steps = len(written)
            assert group.attrs["id"] == index and group.attrs["total_steps"] == steps
            assert group.attrs["seed"] == written.seed
            assert group["observations"].shape == (steps + 1, 3) and group["observations"].dtype == np.float64
            assert group["actions"].shape == (steps, 2) and group["actions"].dtype == np.float32
            assert group["rewards"].shape == (steps,)
            assert group["terminations"].dtype == bool and group["truncations"].dtype == bool
            assert set(group["infos"].keys()) == set(PROVENANCE_COLUMNS) | {"context"}
            assert all(group["infos"][name].shape[0] == steps for name in group["infos"])
            assert group["infos/source"].dtype == np.uint8
            assert json.loads(group["infos/source"].attrs["codes"]) == {"real": 0, "synthetic": 1}
            assert json.loads(group["infos/context"].attrs["names"]) == ["friction", "mass_scale"]

    metadata = json.loads((data / "metadata.json").read_text())
    for key in ("dataset_id", "minari_version", "data_format", "total_episodes", "total_steps",
                "observation_space", "action_space"):
        assert key in metadata
    assert metadata["data_format"] == "hdf5" and isinstance(metadata["action_space"], str)
    assert json.loads(metadata["action_space"]) == {"type": "Box", "dtype": "float32", "shape": [2],
                                                    "low": [-1.0, -1.0], "high": [1.0, 1.0]}
    digest = hashlib.sha256((data / "main_data.hdf5").read_bytes()).hexdigest()
    assert metadata["files"]["main_data.hdf5"]["sha256"] == digest
    assert metadata["provenance"]["scenario_names"] == ["icy_floor", "heavy_payload"]
    assert metadata["kind"] == "mixed" and metadata["task_id"] == "physai/Toy-v0" and metadata["created_at"]


def test_minari_itself_opens_the_dataset(tmp_path, monkeypatch):
    if sys.version_info < (3, 11):
        pytest.skip("the layout is stamped minari_version 0.5.4, which Minari reads from 0.5.4 on, and Minari 0.5.4 "
                    "needs Python >= 3.11 (the test extra installs it there)")
    import minari  # in the test extra ('.[test]'): a missing Minari fails here instead of skipping

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    episodes = mixed_episodes()
    write(tmp_path / "physai" / "test-mixed-v0", episodes)

    dataset = minari.load_dataset("physai/test-mixed-v0")
    assert dataset.total_episodes == 5 and dataset.total_steps == 18
    assert dataset.spec.dataset_name == "test-mixed" and dataset.observation_space == OBS_SPACE
    for written, episode in zip(episodes, dataset.iterate_episodes()):
        np.testing.assert_array_equal(episode.observations, written.observations)
        np.testing.assert_array_equal(episode.actions, written.actions)
        np.testing.assert_array_equal(episode.infos["source"], written.column("source"))
        np.testing.assert_array_equal(episode.infos["parent_state_id"], written.column("parent_state_id"))


def test_flipped_byte_is_refused_with_expected_and_actual_hash(tmp_path):
    target = write(tmp_path / "ds", mixed_episodes())
    main = target / "data" / "main_data.hdf5"
    expected = json.loads((target / "data" / "metadata.json").read_text())["files"]["main_data.hdf5"]["sha256"]
    raw = bytearray(main.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    main.write_bytes(bytes(raw))
    actual = hashlib.sha256(bytes(raw)).hexdigest()

    with pytest.raises(DatasetError) as refused:
        read_dataset(target)
    message = str(refused.value)
    assert str(main) in message and expected in message and actual in message and "rewrite the dataset" in message

    info = dataset_info(target)
    assert info["checksum"]["status"] == "mismatch"
    assert "MISMATCH" in format_dataset_info(info)


@pytest.mark.parametrize("kwargs, field, dataset_value, expected_value", [
    ({"expected_task_id": "HalfCheetah-v5"}, "task_id", "'physai/Toy-v0'", "'HalfCheetah-v5'"),
    ({"observation_space": spaces.Box(-np.inf, np.inf, shape=(4,))}, "observation_space.shape", "[3]", "[4]"),
    ({"observation_space": spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)},
     "observation_space.dtype", "'float64'", "'float32'"),
    ({"action_space": spaces.Box(-1.0, 2.0, shape=(2,), dtype=np.float32)}, "action_space.high", "[1.0, 1.0]",
     "[2.0, 2.0]"),
    ({"action_space": spaces.Discrete(3)}, "action_space.type", "'Box'", "'Discrete'"),
])
def test_task_or_space_mismatch_is_refused_naming_the_field(tmp_path, kwargs, field, dataset_value, expected_value):
    target = write(tmp_path / "ds", mixed_episodes())
    with pytest.raises(DatasetError) as refused:
        read_dataset(target, **kwargs)
    message = str(refused.value)
    assert f"{field} is {dataset_value} in the dataset but {expected_value} is expected" in message


@pytest.mark.parametrize("edit, complaint", [
    ({"format_version": 99}, "format_version=99; this physai reads version 1"),
    ({"format": None}, "not a physai transition dataset"),
])
def test_unknown_format_is_refused(tmp_path, edit, complaint):
    target = write(tmp_path / "ds", mixed_episodes())
    path = target / "data" / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update(edit)
    path.write_text(json.dumps(metadata))
    with pytest.raises(DatasetError, match=complaint):
        read_dataset(target, verify=False)


def _fail_on_second_episode(monkeypatch):
    original = dataset_module._write_episode_group

    def write_until_second(file, index, *args):
        if index == 1:
            raise RuntimeError("disk full")
        original(file, index, *args)
    monkeypatch.setattr(dataset_module, "_write_episode_group", write_until_second)


def _fail_writing_metadata(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(dataset_module, "write_json_atomic", refuse)


@pytest.mark.parametrize("break_writer", [_fail_on_second_episode, _fail_writing_metadata])
def test_interrupted_write_leaves_the_previous_dataset_intact(tmp_path, monkeypatch, break_writer):
    good = mixed_episodes(seed=0)
    target = write(tmp_path / "ds", good)
    break_writer(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        write(tmp_path / "ds", mixed_episodes(seed=1))

    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # staging removed
    loaded = read_dataset(target)
    assert_same_episode(loaded.episode(2), good[2])
    np.testing.assert_array_equal(loaded.episode(0).observations, good[0].observations)


def test_bad_episode_is_refused_before_anything_is_written(tmp_path):
    target = write(tmp_path / "ds", mixed_episodes())
    before = (target / "data" / "main_data.hdf5").read_bytes()
    episodes = mixed_episodes(seed=1)
    episodes[3].observations[1, 0] = np.nan  # a diverged model branch
    with pytest.raises(DatasetError, match=r"episode 3: observations hold NaN .* row 1"):
        write(target, episodes)
    assert (target / "data" / "main_data.hdf5").read_bytes() == before

    with pytest.raises(DatasetError, match=r"episode 0: actions has 5 rows, expected 6"):
        write(tmp_path / "new", [dict(observations=np.zeros((7, 3)), actions=np.zeros((5, 2)), rewards=np.zeros(6),
                                      terminations=np.zeros(6), truncations=np.zeros(6), source=SOURCE_REAL)],
              kind="real")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("mutate, overrides, complaint", [
    (lambda eps: eps[2].parent_state_id.fill(42), {}, "parent_state_id 42 names no real transition"),
    (lambda eps: eps[3].model_index.fill(2), {}, "model_index 2 but provenance_tables.model_hashes names 2"),
    (lambda eps: eps[2].scenario.fill(5), {}, "scenario 5 but provenance_tables.scenario_names names 2"),
    (lambda eps: eps[1].state_id.fill(3), {}, "state_id 3 is given to"),
    (lambda eps: None, {"kind": "real"}, "episode 2 is synthetic but kind='real'"),
    (lambda eps: None, {"dataset_id": "no version"}, "dataset_id='no version' is not of the form"),
    (lambda eps: None, {"observation_space": spaces.Dict({"x": OBS_SPACE})}, "observation_space is a Dict"),
    (lambda eps: None, {"generator_info": {"when": object()}}, "generator_info must be plain JSON"),
])
def test_provenance_and_argument_mistakes_are_refused(tmp_path, mutate, overrides, complaint):
    episodes = mixed_episodes()
    mutate(episodes)
    with pytest.raises(DatasetError, match=complaint):
        write(tmp_path / "ds", episodes, **overrides)
    assert not (tmp_path / "ds").exists()


def test_synthetic_only_dataset_names_where_its_parents_live(tmp_path):
    branches = mixed_episodes()[2:]
    tables = ProvenanceTables(model_hashes=TABLES.model_hashes, scenario_names=TABLES.scenario_names)
    with pytest.raises(DatasetError, match="parent_dataset_id is not set"):
        write(tmp_path / "syn", branches, kind="synthetic", provenance_tables=tables)
    tables = ProvenanceTables(model_hashes=TABLES.model_hashes, scenario_names=TABLES.scenario_names,
                              parent_dataset_id="physai/test-real-v0")
    write(tmp_path / "syn", branches, kind="synthetic", dataset_id="physai/test-syn-v0", provenance_tables=tables)
    loaded = read_dataset(tmp_path / "syn")
    assert loaded.provenance_tables.parent_dataset_id == "physai/test-real-v0"
    assert loaded.transitions.context is None and (loaded.transitions.source == SOURCE_SYNTHETIC).all()
    assert_same_episode(loaded.episode(1), branches[1])


def test_info_table_shows_real_and_synthetic_counts_and_scenarios(tmp_path):
    episodes = mixed_episodes()
    target = write(tmp_path / "ds", episodes)
    info = dataset_info(target)
    assert (info["real_transitions"], info["synthetic_transitions"]) == (10, 8)
    assert (info["real_episodes"], info["synthetic_episodes"]) == (2, 3)
    assert info["scenario_transitions"] == {"icy_floor": 3, "heavy_payload": 2, "(none)": 3}
    assert info["model_transitions"] == {"sha256:aaaa1111": 6, "sha256:bbbb2222": 2}
    # The 3 + 2 + 3 uncertainties the synthetic episodes were built with (the real ones have none).
    built = np.concatenate([episode.column("uncertainty") for episode in episodes[2:]]).astype(np.float64)
    assert built.size == 8 and not np.isnan(built).any()
    assert (info["uncertainty"]["min"], info["uncertainty"]["mean"], info["uncertainty"]["max"]) == pytest.approx(
        (built.min(), built.mean(), built.max()), rel=1e-6)
    assert info["checksum"]["status"] == "ok"

    text = format_dataset_info(info)
    words = " ".join(text.split())
    for expected in ("dataset physai/test-mixed-v0 (mixed)", "task physai/Toy-v0",
                     "transitions 18 (real 10, synthetic 8)", "episodes 5 (real 2, synthetic 3)",
                     "icy_floor: 3 transitions", "heavy_payload: 2 transitions", "sha256:bbbb2222: 2 transitions",
                     "actions Box(float32, shape (2,), low -1, high 1)", "uncertainty min 0.0", "(n 8)",
                     "context friction, mass_scale", "checksum ok (sha256 "):
        assert expected in words, f"{expected!r} missing from:\n{text}"


def test_writer_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(DatasetError, match="is not a dataset"):
        write(tmp_path / "run", mixed_episodes())
    assert (tmp_path / "run" / "summary.json").read_text() == "{}"


def test_a_swap_killed_between_renames_is_recovered(tmp_path):
    target = write(tmp_path / "ds", mixed_episodes())
    retired = tmp_path / ".retired-ds-12345"
    os.replace(target, retired)  # what a kill between the swap's two renames leaves behind
    with pytest.raises(DatasetError, match="previous dataset is intact at .*retired-ds-12345"):
        read_dataset(target)
    write(target, mixed_episodes(seed=1))
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    np.testing.assert_array_equal(read_dataset(target).episode(0).observations, mixed_episodes(seed=1)[0].observations)


def test_transition_batch_checks_lengths_and_concatenates():
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetError, match="TransitionBatch.act has 4 rows, expected 5"):
        TransitionBatch(obs=np.zeros((5, 3)), act=np.zeros((4, 2)), next_obs=np.zeros((5, 3)), reward=np.zeros(5),
                        terminated=np.zeros(5, bool), truncated=np.zeros(5, bool), source=SOURCE_REAL)
    with pytest.raises(DatasetError, match="TransitionBatch.uncertainty has shape"):
        TransitionBatch(obs=np.zeros((5, 3)), act=np.zeros((5, 2)), next_obs=np.zeros((5, 3)), reward=np.zeros(5),
                        terminated=np.zeros(5, bool), truncated=np.zeros(5, bool), source=1, uncertainty=np.zeros(3))
    real = real_episode(rng, 4, env_index=0, seed=1).transitions(episode_index=0)
    synthetic = synthetic_episode(rng, 3, seed=2, parent=1).transitions(episode_index=1)
    both = TransitionBatch.concatenate([real, synthetic])
    assert len(both) == 7 and both.context.shape == (7, 2) and np.isnan(both.context[4:]).all()
    np.testing.assert_array_equal(both.source, [0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(both.select(both.source == 1).branch_depth, [1, 2, 3])
    with pytest.raises(DatasetError, match="obs shapes differ"):
        TransitionBatch.concatenate([real, TransitionBatch(np.zeros((1, 5)), np.zeros((1, 2)), np.zeros((1, 5)),
                                                           [0.0], [False], [False], source=0)])
