"""The declarative description of a task: an MJCF model plus named terms, in the style of Isaac Lab.

A task config (``configs/env/<task>.yaml``) is turned into a ``TaskSpec``; the engine owns the
loop. Term functions are referenced by name: a bare name is looked up in ``physai.envs.mdp``, a
dotted path (``my_pkg.rewards.foo``) is imported, so adding a task never touches the engine.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from physai.core.errors import ConfigError
from physai.envs import mdp

ASSETS = Path(__file__).resolve().parent / "assets"
# Physics backends by short name (``env.backend=warp``); a dotted path to any class with their interface works too.
BACKENDS = {"rollout": "physai.envs.backends.RolloutBackend",  # MuJoCo's C rollout on CPU threads
            "warp": "physai.envs.backends_warp.WarpBackend",  # MuJoCo Warp: a CUDA GPU if Warp finds one, else its CPU
            "warp_cuda": "physai.envs.backends_warp.WarpCudaBackend"}  # MuJoCo Warp on a CUDA GPU, or refused
DEFAULT_BACKEND = BACKENDS["rollout"]
ACTION_KEYS = ("actuators", "scale")
EVENT_MODES = ("startup", "reset", "interval", "once")
TIMED_EVENT_MODES = ("interval", "once")  # fired by a countdown drawn from every_steps
# ``mjcf: <source>:<file>`` reads a model from an installed package: source -> (package, folder in it).
MJCF_SOURCES = {"gymnasium": ("gymnasium", "envs/mujoco/assets")}


class TaskError(ConfigError):
    """A task definition that cannot be built; the message names task, term and field."""


def backend_class(backend: str) -> type:
    """The physics backend ``env.backend`` names: a short name in ``BACKENDS`` or a dotted class path."""
    choices = f"name one of {sorted(BACKENDS)} (rollout, MuJoCo's CPU engine, is the default) or a dotted path " \
              f"to a backend class"
    path = BACKENDS.get(backend, backend)
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise TaskError(f"env.backend={backend!r} is not a physics backend; {choices}")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise TaskError(f"env.backend={backend!r} cannot be imported ({exc}); {choices}") from exc


@dataclass
class Term:
    name: str
    fn: Callable[..., Any]
    params: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    # events only: startup | reset | interval (again every every_steps) | once (one time per episode, at a
    # control step drawn from every_steps: a staged shove)
    mode: str = ""
    every_steps: tuple[int, int] = (0, 0)  # timed events and commands: resample range, in control steps


@dataclass(frozen=True)
class CameraSpec:
    """A camera observation (``pixels:`` in a task file): what the policy sees instead of, or beside, state."""

    camera: str                   # an MJCF camera name
    height: int = 64
    width: int = 64
    frame_stack: int = 1          # the last k frames, oldest first, stacked along the channels
    depth: bool = False           # also a depth image in metres (``depth`` key, float32)
    state: tuple[str, ...] = ()   # observation terms the policy keeps beside the pixels (e.g. joint angles)
    quality: str = "fast"         # fast: no shadows, reflections, skybox, fog or haze; full: as the MJCF says
    # Commands drawn into the image as spheres (a reach target the MJCF has no body for): name -> (radius, rgba).
    markers: tuple[tuple[str, float, tuple[float, float, float, float]], ...] = ()

    def kept_columns(self, observation_names: Sequence[str]) -> list[int]:
        """Indices of the observation columns the policy keeps beside its pixels: those of the ``state`` terms
        (a column is named after its term, indexed when the term is wider than 1: ``joint_angles[0]``)."""
        kept = set(self.state)
        return [i for i, name in enumerate(observation_names) if name.split("[")[0] in kept]


CAMERA_KEYS = ("camera", "height", "width", "frame_stack", "depth", "state", "quality", "markers")
CAMERA_QUALITIES = ("fast", "full")


@dataclass
class TaskSpec:
    name: str
    mjcf: Path
    frame_skip: int
    episode_steps: int
    actuators: list[str]
    action_scale: float
    observations: list[Term]
    rewards: list[Term]
    terminations: list[Term]
    commands: list[Term]
    events: list[Term]
    solved_threshold: Optional[float]
    observation_noise: float = 0.0
    camera: Optional[str] = None  # MJCF camera for videos; None: MuJoCo's free camera
    # Physics-context name -> [low, high]: scale draws of that name come from this range instead of their
    # event's (how a scenario's physics is staged in the simulator; see physai.synthetic.staging).
    context_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    pixels: Optional[CameraSpec] = None  # camera observations; None: a state-only task


def resolve_mjcf(task: str, mjcf: str) -> Path:
    """The MJCF file a task names: ``<source>:<file>`` for a model an installed package ships (read
    where it is installed, never copied), a path under envs/assets/, or an absolute path."""
    mjcf = str(mjcf)
    source, sep, rest = mjcf.partition(":")
    if sep and len(source) > 1 and source.isidentifier():  # a source prefix, not a Windows drive letter
        if source not in MJCF_SOURCES:
            raise TaskError(f"task {task}: mjcf={mjcf!r} names the unknown source {source!r}; use one of "
                            f"{[f'{s}:<file>' for s in MJCF_SOURCES]}, a file under envs/assets/ or an absolute path")
        package, folder = MJCF_SOURCES[source]
        try:
            root = Path(str(files(package))) / folder
        except ModuleNotFoundError as exc:
            raise TaskError(f"task {task}: mjcf={mjcf!r} reads {package}'s models, but {package} is not "
                            f"installed; install it (pip install {package}) or point mjcf at another file") from exc
        path = root / rest
        if not rest or not path.is_file():
            known = sorted(p.name for p in root.glob("*.xml")) if root.is_dir() else []
            raise TaskError(f"task {task}: mjcf={mjcf!r} names no file of {package}'s models (looked in {root}); "
                            f"use one of {[f'{source}:{k}' for k in known]}")
        return path
    path = Path(mjcf)
    if not path.is_absolute():
        path = ASSETS / path
    if not path.is_file():
        raise TaskError(f"task {task}: mjcf={mjcf!r} does not exist (looked in {path.parent}); put the MJCF "
                        f"file under envs/assets/, give an absolute path, or name a packaged model as "
                        f"{next(iter(MJCF_SOURCES))}:<file>")
    return path


def resolve_function(task: str, section: str, term: str, name: str) -> Callable[..., Any]:
    if "." not in name:
        fn = getattr(mdp, name, None)
        if fn is None or name.startswith("_"):
            raise TaskError(f"task {task}: {section}.{term}.fn={name!r} is not a function in physai.envs.mdp; "
                            f"use one of its functions or a dotted path to your own")
        return fn
    module_name, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise TaskError(f"task {task}: {section}.{term}.fn={name!r} cannot be imported ({exc})") from exc


def _terms(task: str, section: str, entries: dict[str, Any] | None) -> list[Term]:
    terms = []
    for term_name, entry in (entries or {}).items():
        if entry is None:  # a term switched off by an override (rewards.alive=null)
            continue
        entry = dict(entry)
        if "fn" not in entry:
            raise TaskError(f"task {task}: {section}.{term_name} has no 'fn'; name the term function")
        fn = resolve_function(task, section, term_name, entry.pop("fn"))
        weight = float(entry.pop("weight", 1.0))
        mode = entry.pop("mode", "")
        if section == "events" and mode not in EVENT_MODES:
            raise TaskError(f"task {task}: events.{term_name}.mode={mode!r} must be one of {list(EVENT_MODES)}")
        every = entry.pop("every_steps", (0, 0))
        every = (int(every), int(every)) if isinstance(every, (int, float)) else tuple(int(v) for v in every)
        if (section == "commands" or mode in TIMED_EVENT_MODES) and (len(every) != 2 or every[0] < 1 or every[0] > every[1]):
            raise TaskError(f"task {task}: {section}.{term_name}.every_steps={list(every)} must be [low, high] "
                            f"with 1 <= low <= high")
        terms.append(Term(term_name, fn, entry.pop("params", {}) or {}, weight, mode, every))
        if entry:
            raise TaskError(f"task {task}: {section}.{term_name} has unknown field(s) {sorted(entry)}; "
                            f"a term takes fn, params, weight, mode, every_steps")
    return terms


def build_spec(name: str, mjcf: str, frame_skip: int, episode_steps: int, actions: dict[str, Any],
               observations: dict, rewards: dict, terminations: dict | None = None, commands: dict | None = None,
               events: dict | None = None, solved_threshold: Optional[float] = None,
               observation_noise: float = 0.0, camera: Optional[str] = None,
               context_ranges: Optional[dict[str, Any]] = None, pixels: Optional[dict[str, Any]] = None,
               **unknown: Any) -> TaskSpec:
    if unknown:
        raise TaskError(f"task {name}: unknown field(s) {sorted(unknown)}; a task takes name, mjcf, camera, "
                        f"frame_skip, episode_steps, solved_threshold, observation_noise, actions, observations, "
                        f"rewards, terminations, commands, events, context_ranges, pixels")
    extra = sorted(set(actions) - set(ACTION_KEYS))
    if extra:
        raise TaskError(f"task {name}: actions has unknown field(s) {extra}; it takes {list(ACTION_KEYS)}")
    if float(actions.get("scale", 1.0)) <= 0:
        raise TaskError(f"task {name}: actions.scale={actions.get('scale')} must be > 0")
    if observation_noise < 0:
        raise TaskError(f"task {name}: observation_noise={observation_noise} must be >= 0")
    path = resolve_mjcf(name, mjcf)
    if frame_skip < 1 or episode_steps < 1:
        raise TaskError(f"task {name}: frame_skip and episode_steps must be >= 1")
    if not observations:
        raise TaskError(f"task {name}: observations is empty; a policy needs at least one observation term")
    return TaskSpec(
        name=name, mjcf=path, frame_skip=int(frame_skip), episode_steps=int(episode_steps),
        actuators=list(actions.get("actuators", [])), action_scale=float(actions.get("scale", 1.0)),
        observations=_terms(name, "observations", observations), rewards=_terms(name, "rewards", rewards),
        terminations=_terms(name, "terminations", terminations), commands=_terms(name, "commands", commands),
        events=_terms(name, "events", events), solved_threshold=solved_threshold,
        observation_noise=float(observation_noise), camera=camera,
        context_ranges=_context_ranges(name, context_ranges), pixels=_camera_spec(name, pixels, observations, commands))


def _camera_spec(task: str, pixels: Optional[dict[str, Any]], observations: dict,
                 commands: Optional[dict]) -> Optional[CameraSpec]:
    if not pixels:
        return None
    pixels = dict(pixels)
    unknown = sorted(set(pixels) - set(CAMERA_KEYS))
    if unknown:
        raise TaskError(f"task {task}: pixels has unknown field(s) {unknown}; it takes {list(CAMERA_KEYS)}")
    if not pixels.get("camera"):
        raise TaskError(f"task {task}: pixels.camera is missing; name a camera of the MJCF")
    for key in ("height", "width", "frame_stack"):
        if key in pixels and (not isinstance(pixels[key], int) or isinstance(pixels[key], bool) or pixels[key] < 1):
            raise TaskError(f"task {task}: pixels.{key}={pixels[key]!r} must be a whole number >= 1")
    if pixels.get("quality", "fast") not in CAMERA_QUALITIES:
        raise TaskError(f"task {task}: pixels.quality={pixels['quality']!r} must be one of {list(CAMERA_QUALITIES)}")
    kept = tuple(pixels.get("state") or ())
    missing = [term for term in kept if term not in (observations or {}) or observations[term] is None]
    if missing:
        raise TaskError(f"task {task}: pixels.state names {missing}, which are not observation terms of the task; "
                        f"use some of {sorted(k for k, v in (observations or {}).items() if v is not None)}")
    pixels["state"] = kept
    pixels["depth"] = bool(pixels.get("depth", False))
    pixels["markers"] = _markers(task, pixels.get("markers"), commands)
    return CameraSpec(**pixels)


def _markers(task: str, markers: Optional[dict[str, Any]], commands: Optional[dict]) -> tuple:
    checked = []
    for name, entry in (markers or {}).items():
        if name not in (commands or {}):
            raise TaskError(f"task {task}: pixels.markers.{name} names no command of the task; markers draw commands "
                            f"({sorted(commands or {})})")
        entry = dict(entry or {})
        radius, rgba = float(entry.pop("size", 0.02)), tuple(float(v) for v in entry.pop("rgba", (0.1, 0.8, 0.2, 1.0)))
        if entry or radius <= 0 or len(rgba) != 4:
            raise TaskError(f"task {task}: pixels.markers.{name} takes size (a radius > 0, metres) and rgba (4 values)")
        checked.append((str(name), radius, rgba))
    return tuple(checked)


def _context_ranges(task: str, ranges: Optional[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    checked = {}
    for key, bounds in (ranges or {}).items():
        values = list(bounds) if isinstance(bounds, (list, tuple)) else []
        if len(values) != 2 or not 0 < float(values[0]) <= float(values[1]):
            raise TaskError(f"task {task}: context_ranges.{key}={bounds!r} must be [low, high] with 0 < low <= high "
                            f"(scales of the nominal physics)")
        checked[str(key)] = (float(values[0]), float(values[1]))
    return checked
