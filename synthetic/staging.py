"""Stage a scenario prompt in the real simulator, so an edge case is measured on real physics.

A scenario asks the world model for physics (ranges of the task's domain-randomization context) and
kicks (deltas on observation columns during a branch). The simulator can apply both:

* **Physics.** Each context range replaces the range of that name's draw (``context_ranges`` of the
  task), so every evaluation episode gets, say, a pole 30-60% heavier than nominal, even where
  training drew only 0.7-1.3. Only scale draws can be set; a name no event draws as a scale is refused.
* **Kicks.** An observation is a reading of the state, so a kick on a column is a push on what the
  column reads: a joint-velocity column becomes a velocity push on that degree of freedom, a
  velocimeter column a push along that axis of the sensor's frame on a free-floating body. All columns
  of one kick land together, once per episode, at a control step of the episode drawn from the kick's
  ``at_steps`` (in the model those count from the branch's start), with the delta divided by the
  column's observation scale. Columns the simulator cannot push (positions, commands, derived
  features) are refused with the column named.
* **Starts** are not staged: episodes start from the task's own reset. A scenario's ``start_ranges``
  are listed under ``not_staged`` in the record, so the report says what was left to the model.

``randomize_scenario`` builds the honest alternative to prompting a world model: a training task whose
domain randomization covers both the task's own ranges and the scenario's (their hull), with the
scenario's kicks in every episode, so real steps are spent on the edge case.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from physai.envs import mdp
from physai.envs.engine import BatchedEngine
from physai.synthetic.scenario import Perturbation, Scenario, ScenarioError


def stage_scenario(task: Any, scenario: Scenario, kicks: bool = True) -> tuple[Any, dict[str, Any]]:
    """The task with the scenario's physics (and, unless ``kicks=False``, its kicks) applied as events, and
    a record of what was staged."""
    return _with_scenario(task, scenario, kicks=kicks, widen=False)


def randomize_scenario(task: Any, scenario: Scenario) -> tuple[Any, dict[str, Any]]:
    """The task randomized over the hull of its own and the scenario's physics ranges, with the scenario's
    kicks in every episode (domain randomization that spends real steps on the edge case), and its record."""
    return _with_scenario(task, scenario, kicks=True, widen=True)


def _with_scenario(task: Any, scenario: Scenario, kicks: bool, widen: bool) -> tuple[Any, dict[str, Any]]:
    if task.task is None:
        raise ScenarioError(f"scenario {scenario.name!r}: only physai tasks (physai/<Task>-v0) can stage a "
                            f"scenario in the simulator; {task.id} has no task definition to add events to")
    engine = BatchedEngine(task.task_spec, num_envs=1, nthread=1)  # has drawn every startup and reset event
    context = {scenario.context_names[i]: [float(low), float(high)]
               for i, (low, high) in scenario.context_ranges.items()}
    events = dict(task.task.get("events") or {})
    staged_kicks = []
    for kick in scenario.perturbations if kicks else ():
        columns = [engine.observation_names[column] for column in kick.columns]
        pushes = [_push(scenario.name, kick, column, engine) for column in columns]
        events[f"scenario_kick_{kick.name}"] = {"fn": "push_all", "params": {"pushes": pushes}, "mode": "once",
                                               "every_steps": [kick.first_step, kick.last_step]}
        staged_kicks.append({"name": kick.name, "columns": columns, "pushes": pushes,
                             "at_steps": [kick.first_step, kick.last_step]})
    _check_context_is_staged(scenario.name, engine, context)
    if widen:
        context = {name: [min(low, engine.scaled_context[name][0]), max(high, engine.scaled_context[name][1])]
                   for name, (low, high) in context.items()}
    staged = task.with_task_changes(events=events, context_ranges=context)
    not_staged = ([f"start_ranges of {[engine.observation_names[i] for i in scenario.start_ranges]} (episodes "
                   f"start from the task's own reset)"] if scenario.start_ranges else [])
    return staged, {"context": context, "kicks": staged_kicks, "not_staged": not_staged}


def _push(scenario: str, kick: Perturbation, column: str, engine: BatchedEngine) -> dict[str, Any]:
    """The push event (``fn`` and ``params``) that changes what ``column`` reads by the kick's delta."""
    term_name, index = _split_column(column)
    term = next(t for t in engine.spec.observations if t.name == term_name)
    where = f"scenario {scenario!r}: perturbations.{kick.name} on {column!r}"
    scale = float(term.params.get("scale", 1.0))
    if scale == 0:
        raise ScenarioError(f"{where}: the column's observation scale is 0, so no push changes what it reads")
    delta = sorted((kick.low / scale, kick.high / scale))
    model = engine.model
    if term.fn is mdp.joint_vel:
        joints = term.params.get("joints")
        dofs = np.arange(model.nv) if joints is None else engine.dof_indices(tuple(joints))
        dof = int(dofs[index])
        joint = int(model.dof_jntid[dof])
        return {"fn": "push_dofs", "params": {"joint": model.joint(joint).name,
                                             "dofs": [dof - int(model.jnt_dofadr[joint])], "vel_range": delta}}
    if term.fn is mdp.sensor:
        sensor = model.sensor(term.params["name"])
        if sensor.type[0] == mujoco.mjtSensor.mjSENS_VELOCIMETER:
            site = int(sensor.objid[0])
            body = int(model.site_bodyid[site])
            joint = int(model.body_jntadr[body])
            if joint < 0 or model.jnt_type[joint] != mujoco.mjtJoint.mjJNT_FREE:
                raise ScenarioError(f"{where}: the velocimeter sits on body {model.body(body).name!r}, which has no "
                                    f"free joint; only a free-floating body can be pushed along the sensor's axes")
            if not np.allclose(model.site_quat[site], [1.0, 0.0, 0.0, 0.0]):
                raise ScenarioError(f"{where}: the velocimeter's site is rotated against its body; align the site "
                                    f"with the body to stage pushes along its axes")
            axis = [0.0, 0.0, 0.0]
            axis[index] = 1.0
            return {"fn": "push_body_velocity", "params": {"joint": model.joint(joint).name, "axis": axis,
                                                           "vel_range": delta}}
    raise ScenarioError(f"{where}: the simulator can push only joint-velocity columns (joint_vel) and velocimeter "
                        f"columns of a free-floating body, but this column reads {term.fn.__name__}; kick a velocity "
                        f"column instead, or evaluate this scenario in the world model only")


def _split_column(column: str) -> tuple[str, int]:
    name, bracket, rest = column.partition("[")
    return (name, int(rest.rstrip("]"))) if bracket else (name, 0)


def _check_context_is_staged(scenario: str, engine: BatchedEngine, context: dict[str, list[float]]) -> None:
    """Every named range must be drawn as a scale by some event, or the episode would run nominal physics.

    Which names are scale draws depends on the task's events only, so the nominal task's engine tells."""
    for name in context:
        if name not in engine.scaled_context:
            raise ScenarioError(f"scenario {scenario!r}: context.{name} is not drawn as a scale of nominal physics "
                                f"by any startup or reset event of this task, so the simulator cannot stage it")


def staged_description(record: dict[str, Any]) -> str:
    """One line for the report: the physics ranges and pushes the evaluation applied, and what it left out."""
    physics = ", ".join(f"{name} in [{low:g}, {high:g}]" for name, (low, high) in record["context"].items())
    pushes = ", ".join(
        f"{kick['name']} on {', '.join(kick['columns'])} ("
        + ", ".join(f"{p['fn']} {p['params']['vel_range'][0]:g} to {p['params']['vel_range'][1]:g}"
                    for p in kick["pushes"])
        + f"; once per episode, at episode step {kick['at_steps'][0]}-{kick['at_steps'][1]})"
        for kick in record["kicks"])
    left_out = "; ".join(record.get("not_staged") or [])
    return "; ".join(part for part in (physics and f"physics: {physics}", pushes and f"pushes: {pushes}",
                                       left_out and f"not staged: {left_out}") if part)
