"""The MuJoCo Warp backend on Warp's CPU device against MuJoCo's C rollout backend.

Tolerance: Warp computes in float32, C MuJoCo in float64, so from the same state with the same controls they
agree to float32 rounding (about 1e-7 relative per operation) and then differ as far as the system amplifies
that rounding. Cart-pole (a smooth system, only joint limits) stays within ``SMOOTH_TOLERANCE`` of C for the
``SMOOTH_STEPS`` control steps tested, per-env randomized physics, resets and an interval push included
(measured: 2e-6). A contact task amplifies rounding quickly: with full-range random torques, half-cheetah's
state differs by about 2e-4 after one control step and 3e-3 after ten (its contact forces come from a
float32 solve), and grows to O(1) by fifty; C MuJoCo against itself, with only the solver's warm start
differing, reaches O(0.1) by two hundred. So contact tasks are compared over ``CONTACT_STEPS`` control steps
within ``CONTACT_TOLERANCE``.

Warp compiles its kernels on first use (about 40 s for cart-pole on two cores) into its kernel cache in the
user's cache folder, shared by every test and later run; the default suite keeps to cart-pole's kernels.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys

import mujoco
import numpy as np
import pytest

import physai.envs  # noqa: F401  registers physai/<Task>-v0
from conftest import run_cli
from physai.envs.backends import RolloutBackend
from physai.envs.backends_warp import WarpBackend
from physai.envs.engine import FULL, BatchedEngine
from physai.envs.registry import packaged_task_configs
from physai.envs.spec import TaskError, Term, build_spec

WARP = "warp"  # the short name of physai.envs.backends_warp.WarpBackend
SMOOTH_TOLERANCE, SMOOTH_STEPS = 1e-5, 200
CONTACT_TOLERANCE, CONTACT_STEPS = 1e-2, 10

requires_warp = pytest.mark.skipif(importlib.util.find_spec("mujoco_warp") is None
                                   or importlib.util.find_spec("warp") is None,
                                   reason="MuJoCo Warp is not installed: pip install -e '.[warp]'")


def _spec(task: str):
    return build_spec(**copy.deepcopy(packaged_task_configs()[task]["task"]))


@requires_warp
def test_cartpole_on_warp_steps_resets_and_randomizes_as_the_c_engine_does():
    pushes = {"C": 0, "Warp": 0}

    def counting_pushes(backend: str):
        """cartpole_balance whose interval push fires within the short episodes of random actions, counted."""
        spec = _spec("cartpole_balance")
        nudge = next(term for term in spec.events if term.name == "nudge")
        push, nudge.every_steps = nudge.fn, (5, 10)

        def counted(env, env_ids, **params):
            pushes[backend] += len(env_ids)
            return push(env, env_ids, **params)

        nudge.fn = counted
        return spec

    c_engine = BatchedEngine(counting_pushes("C"), 8, seed=0, nthread=1)
    warp_engine = BatchedEngine(counting_pushes("Warp"), 8, seed=0, nthread=1, backend=WARP)
    # The startup events gave each env its own pole mass and motor gain; the device carries them per env.
    masses = np.array([model.body_mass for model in warp_engine.models])
    assert len(np.unique(masses[:, -1])) == 8
    assert {"body_mass", "body_inertia", "actuator_gainprm"} <= set(warp_engine.backend._carried)
    actions = np.random.default_rng(1).uniform(-1, 1, size=(SMOOTH_STEPS, 8, 1))
    resets = 0
    for action in actions:
        c_out, warp_out = c_engine.step(action), warp_engine.step(action)
        np.testing.assert_allclose(warp_out["obs"], c_out["obs"], atol=SMOOTH_TOLERANCE, rtol=0)
        np.testing.assert_allclose(warp_out["reward"], c_out["reward"], atol=SMOOTH_TOLERANCE, rtol=0)
        np.testing.assert_array_equal(warp_out["terminated"], c_out["terminated"])
        np.testing.assert_array_equal(warp_out["truncated"], c_out["truncated"])
        resets += len(c_out["info"].get("done_ids", ()))
    assert resets >= 8  # random actions drop the pole: every env reset at least once on both backends
    np.testing.assert_allclose(warp_engine.backend._model.body_mass.numpy(), masses, rtol=1e-6)  # on the device
    assert pushes["C"] > 8 and pushes["Warp"] == pushes["C"]  # the same pushes, drawn from the same stream
    c_engine.close()
    warp_engine.close()


def _edit_condim(env, env_ids):
    """A per-env edit of a field MJWarp keeps one copy of for all worlds."""
    for i in env_ids:
        env.models[i].geom_condim[:] = 1 + 2 * (i % 2)


@requires_warp
def test_an_event_editing_a_field_warp_does_not_batch_is_refused_at_build():
    spec = _spec("cartpole_balance")
    spec.events.append(Term(name="contact_dims", fn=_edit_condim, mode="startup"))
    with pytest.raises(TaskError, match=r"event 'contact_dims' edits model field 'geom_condim'"):
        BatchedEngine(spec, 4, seed=0, nthread=1, backend=WARP)


@requires_warp
def test_asking_for_the_gpu_where_warp_finds_none_says_so_and_names_the_cpu_device():
    import warp

    if warp.get_cuda_device_count():
        pytest.skip("this machine has a CUDA device: warp_cuda builds here")
    with pytest.raises(TaskError, match=r"Warp finds no CUDA device here; use Warp's CPU device: env\.backend=warp$"):
        BatchedEngine(_spec("cartpole_balance"), 2, seed=0, nthread=1, backend="warp_cuda")


def test_the_warp_backend_without_its_extra_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)  # what Python does when a module is not installed
    with pytest.raises(TaskError, match=r"install the warp extra, pip install -e '\.\[warp\]'"):
        BatchedEngine(_spec("cartpole_balance"), 2, seed=0, nthread=1, backend=WARP)


@pytest.mark.slow
@requires_warp
@pytest.mark.parametrize("task", ["physai_half_cheetah", "physai_hopper"])
def test_a_contact_task_on_warp_matches_c_for_ten_control_steps(task):
    """Backend against backend, from the same states with the same full-range controls; the reference
    steps each env on its own MjData (warm start carried, as Warp does)."""
    spec = _spec(task)
    engine = BatchedEngine(spec, 8, seed=0, nthread=1)
    model, frame_skip, n = engine.model, spec.frame_skip, 8
    controls = np.random.default_rng(1).uniform(-1, 1, size=(CONTACT_STEPS, n, frame_skip, model.nu))
    reference = [RolloutBackend(model, 1, 1) for _ in range(n)]
    warp = WarpBackend(model, n, 1)
    c_state, warp_state = engine.state.copy(), engine.state.copy()
    nstate = c_state.shape[1]
    c_out, warp_out = np.zeros((n, frame_skip, nstate)), np.zeros((n, frame_skip, nstate))
    c_sensors, warp_sensors = np.zeros((n, frame_skip, model.nsensordata)), np.zeros((n, frame_skip, model.nsensordata))
    for step in range(CONTACT_STEPS):
        for i, backend in enumerate(reference):
            backend.step([model], c_state[i:i + 1], controls[step, i:i + 1], c_out[i:i + 1], c_sensors[i:i + 1])
        warp.step([model] * n, warp_state, controls[step], warp_out, warp_sensors)
        # What a control step leaves (the engine reads that alone; Warp keeps the physics steps before it on
        # the device), after a control per physics step.
        np.testing.assert_allclose(warp_out[:, -1], c_out[:, -1], atol=CONTACT_TOLERANCE, rtol=0,
                                   err_msg=f"control step {step}")
        np.testing.assert_allclose(warp_sensors[:, -1], c_sensors[:, -1], atol=CONTACT_TOLERANCE,
                                   rtol=CONTACT_TOLERANCE)
        c_state, warp_state = c_out[:, -1].copy(), warp_out[:, -1].copy()
    # A reset starts the solver cold on the device too: stepping a reset env from qpos0 matches C from qpos0.
    warp.reset_envs(np.arange(n))
    rest = np.zeros_like(c_state)
    mujoco.mj_getState(model, mujoco.MjData(model), rest[0], FULL)
    rest[:] = rest[0]
    for backend in reference:
        backend.reset_envs(np.zeros(1, dtype=np.int64))
    for i, backend in enumerate(reference):
        backend.step([model], rest[i:i + 1], controls[0, i:i + 1], c_out[i:i + 1], c_sensors[i:i + 1])
    warp.step([model] * n, rest, controls[0], warp_out, warp_sensors)
    np.testing.assert_allclose(warp_out[:, -1], c_out[:, -1], atol=CONTACT_TOLERANCE, rtol=0)
    warp.close()
    engine.close()


@pytest.mark.slow
@requires_warp
def test_a_pile_that_overflows_warps_constraint_rows_still_steps_as_c_does(caplog, monkeypatch):
    """24 balls resting on a plane need more constraint rows than MJWarp's default (64 per world). MJWarp drops
    the rows that do not fit, and the balls sink away from C; the backend sees the overflow, doubles the room
    and redoes the step, so the pile rests as in C."""
    balls = "".join(f'<body pos="{0.25 * (i % 6)} {0.25 * (i // 6)} 0.1"><freejoint/><geom type="sphere" '
                    f'size="0.1"/></body>' for i in range(24))
    model = mujoco.MjModel.from_xml_string(f'<mujoco model="pile"><worldbody><geom type="plane" size="5 5 .1"/>'
                                           f'{balls}</worldbody></mujoco>')
    n, frame_skip = 2, 2
    rest = np.zeros((n, mujoco.mj_stateSize(model, FULL)))
    mujoco.mj_getState(model, mujoco.MjData(model), rest[0], FULL)
    rest[:] = rest[0]
    controls, sensors = np.zeros((n, frame_skip, 0)), np.zeros((n, frame_skip, 0))
    warp, unchecked, c = WarpBackend(model, n, 1), WarpBackend(model, n, 1), RolloutBackend(model, n, 1)
    monkeypatch.setattr(unchecked, "_grow_on_overflow", lambda: False)  # what MJWarp alone does
    default_rows = warp._data.njmax
    states = {name: rest.copy() for name in ("warp", "unchecked", "c")}
    out = np.zeros((n, frame_skip, rest.shape[1]))
    for _ in range(50):
        for name, backend in (("warp", warp), ("unchecked", unchecked), ("c", c)):
            backend.step([model] * n, states[name], controls, out, sensors)
            states[name] = out[:, -1].copy()
    assert warp._data.njmax == 2 * default_rows
    assert "redoing the step with room for" in caplog.text and "NEFC" in caplog.text
    np.testing.assert_allclose(states["warp"], states["c"], atol=1e-5, rtol=0)
    assert np.abs(states["unchecked"] - states["c"]).max() > 0.1   # dropped rows: the balls sink
    warp.close()
    unchecked.close()


@pytest.mark.slow
@requires_warp
def test_bench_sim_measures_the_warp_backend_beside_the_c_engine(tmp_path):
    result = run_cli(["bench", "sim", "--task", "cartpole_balance", "--backend", "warp", "--envs", "16", "--threads",
                      "1", "--seconds", "0.2", "--rounds", "2", "--ppo-timesteps", "0", "--no-envpool",
                      "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads((tmp_path / "sim_cartpole_balance_warp.json").read_text())
    (point,) = figures["points"]
    warp = point["contenders"]["physai warp"]
    assert figures["backend"] == "warp" and warp["rounds"] == 2 and 0 < warp["min"] <= warp["median"] <= warp["max"]
    assert point["ratio_warp_vs_c_engine"] == pytest.approx(warp["median"] / point["contenders"]["physai"]["median"])
    assert (tmp_path / "sim_scaling_cartpole_balance_warp.png").stat().st_size > 1000


@requires_warp
def test_the_gpu_hosts_benchmark_runs_without_the_training_stack(tmp_path):
    """``benchmarks/gpu_sim.sh`` runs ``physai.bench.device_sim`` on a GPU host that has no SB3, Hydra, wandb or
    onnxruntime: with those imports made to fail, the module still measures every batch size on the device."""
    absent = ["stable_baselines3", "hydra", "omegaconf", "wandb", "matplotlib", "onnx", "onnxruntime", "rich",
              "rsl_rl", "tensordict", "optuna", "envpool"]
    script = (f"import sys\nsys.modules.update(dict.fromkeys({absent!r}))\n"
              f"from physai.bench.device_sim import main\n"
              f"main(['--task', 'cartpole_balance', '--envs', '8,16', '--seconds', '0.4', '--rounds', '2', "
              f"'--out', {str(tmp_path)!r}])\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "sim_cartpole_balance_warp_device.json").read_text())
    assert figures["backend"] == "warp" and figures["command"].startswith("python -m physai.bench.device_sim")
    # each batch size with the batch kept on the physics' device and on the host
    assert [(point["num_envs"], point["batch"]) for point in figures["points"]] == [
        (8, "device"), (8, "host"), (16, "device"), (16, "host")]
    for point in figures["points"]:
        assert point["device"].startswith(("cpu", "cuda")) and point["rounds"] == 2
        assert 0 < point["min"] <= point["median"] <= point["max"]
        assert point["physics_steps_per_s"] == pytest.approx(point["median"] * figures["frame_skip"])
    assert figures["versions"]["mujoco-warp"] == "4.0.0"


@requires_warp
def test_the_agreement_table_reports_each_task_and_what_warp_refuses(tmp_path, monkeypatch):
    """``python -m physai.bench.warp_agreement``: cart-pole within the smooth tolerance with the same resets, and
    a task Warp refuses listed with the reason instead of stopping the table."""
    from physai.bench import warp_agreement

    real_build = warp_agreement.BatchedEngine

    def refusing(spec, *args, backend="rollout", **kwargs):
        if spec.name == "reach2d" and backend == "warp":
            raise TaskError("task reach2d: refused for this test")
        return real_build(spec, *args, backend=backend, **kwargs)

    monkeypatch.setattr(warp_agreement, "BatchedEngine", refusing)
    warp_agreement.main(["--tasks", "cartpole_balance,reach2d", "--steps", "60", "--envs", "4", "--out", str(tmp_path)])
    cartpole, reach = json.loads((tmp_path / "warp_agreement.json").read_text())["tasks"]
    assert cartpole["task"] == "cartpole_balance" and list(cartpole["max_obs_deviation"]) == ["1", "10", "50", "60"]
    assert 0 < cartpole["max_obs_deviation"]["60"] < SMOOTH_TOLERANCE
    assert cartpole["max_reward_deviation"]["60"] < SMOOTH_TOLERANCE and cartpole["first_done_mismatch"] is None
    assert cartpole["c_engine_resets"] > 0  # random actions drop the pole: resets were compared too
    assert reach == {"task": "reach2d", "refused": "task reach2d: refused for this test"}
