#!/usr/bin/env bash
# The MuJoCo Warp backend's simulation benchmark and a training run on an offline GPU host that has Python 3.12
# with PyTorch, JAX, onnxruntime and numpy, but no mujoco, warp-lang, gymnasium or rsl-rl-lib, and no network.
# The wheels are carried to it as parts of one archive (each under 60 MiB, for transfer tools that cap a file's
# size):
#
#   with network:        bash benchmarks/gpu_sim.sh prepare
#                        -> build/gpu_wheels/part-aa, part-ab, ... and wheels.sha256
#   on the GPU host:     copy build/gpu_wheels/ (every part and wheels.sha256) into the same place of this tree
#                        bash benchmarks/gpu_sim.sh run [all | sim | train]
#                        -> checks and installs the wheels (again harmlessly), then
#                           sim:   python -m physai.bench.device_sim per task, writing
#                                  benchmarks/results/sim_<task>_warp_device.json;
#                           train: the quadruped trained with rsl-rl's PPO (python -m physai.bench.device_train) for
#                                  at most TRAIN_MINUTES of training clock, writing
#                                  benchmarks/results/train_quadruped_velocity_warp_device.json;
#                           all (the default): both. Results are copied to $OUT when set.
#
# Each part takes several minutes (the first step of each compiles Warp's CUDA kernels, tens of seconds); where one
# command may run only so long, run the parts as separate commands. A job that fails does not lose the others'.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=build/gpu_wheels
PYTHON=${PYTHON:-python3}
TRAIN_MINUTES=${TRAIN_MINUTES:-3}
# What the GPU machine lacks, pinned: mujoco-warp and warp-lang as the warp extra pins them, the rest as tested here.
# rsl-rl-lib comes with what it imports (tensordict, pyvers, tensorboard, protobuf, packaging), not with what
# only its runner's logging and export use (GitPython, onnx, onnxscript): every wheel installs without
# dependency resolution, so the list is the whole set (on the lent machine they replace any other version of
# the same package, protobuf and packaging included).
PACKAGES="mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 mujoco-warp==4.0.0 warp-lang==1.19.0
  gymnasium==1.4.0 cloudpickle==3.1.3 farama-notifications==0.0.6 etils==1.15.0 zipp==4.1.2 absl-py==2.5.1
  glfw==2.11.0 pyopengl==3.1.10 pyyaml==6.0.4 websockets==17.4
  rsl-rl-lib==5.5.1 tensordict==0.15.3 pyvers==0.2.3 tensorboard==2.21.0 protobuf==7.36.2 packaging==26.4"

case "${1:-}" in
  prepare)
    rm -rf "$WHEELS" && mkdir -p "$WHEELS/all"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d "$WHEELS/all" $PACKAGES
    tar -cf - -C "$WHEELS/all" . | split -b 60M - "$WHEELS/part-"
    (cd "$WHEELS" && cat part-* | sha256sum | cut -d' ' -f1 > wheels.sha256)
    rm -rf "$WHEELS/all"
    ls -l "$WHEELS"
    ;;
  run)
    PARTS=${2:-all}
    case "$PARTS" in all|sim|train) ;; *) echo "run takes all, sim or train, not '$PARTS'"; exit 2 ;; esac
    test "$(cd "$WHEELS" && cat part-* | sha256sum | cut -d' ' -f1)" = "$(cat "$WHEELS/wheels.sha256")" \
      || { echo "the wheel parts in $WHEELS are incomplete: carry every part (see the top of this script)"; exit 2; }
    mkdir -p "$WHEELS/all" && cat "$WHEELS"/part-* | tar -xf - -C "$WHEELS/all"
    # shellcheck disable=SC2086
    "$PYTHON" -m pip install --no-deps --no-index --find-links "$WHEELS/all" $PACKAGES
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    failed=0
    if [ "$PARTS" != train ]; then
      rm -f benchmarks/results/sim_*_warp_device.json  # what a job leaves is this run's, or nothing
      for job in "cartpole_balance 1024,4096,8192,16384" "quadruped_velocity 1024,4096,8192"; do
        set -- $job
        # physai is not installed there: physai.envs and physai.configs are read from the source tree.
        "$PYTHON" - "$1" "$2" <<'PY' || { echo "the $1 benchmark failed; going on"; failed=1; }
import os
import sys

import physai

physai.__path__.append(os.getcwd())  # physai.envs -> envs/, physai.configs -> configs/, as pyproject maps them
from physai.bench.device_sim import main

main(["--task", sys.argv[1], "--envs", sys.argv[2]])
PY
      done
    fi
    if [ "$PARTS" != sim ]; then
      rm -f benchmarks/results/train_*_warp_device.json
      # An empty kernel cache, so the training clock counts Warp's compilation as a first run on a new machine
      # would (a simulation benchmark fills the default one); the training budget plus time to evaluate.
      WARP_CACHE_PATH="$(mktemp -d)" timeout $((TRAIN_MINUTES * 60 + 240)) "$PYTHON" - "$TRAIN_MINUTES" <<'PY' \
        || { echo "the training run failed"; failed=1; }
import os
import sys

import physai

physai.__path__.append(os.getcwd())
from physai.bench.device_train import main

main(["--task", "quadruped_velocity", "--envs", "4096", "--minutes", sys.argv[1]])
PY
    fi
    if [ -n "${OUT:-}" ]; then cp benchmarks/results/*_warp_device.json "$OUT"/ || true; fi
    exit $failed
    ;;
  *)
    echo "usage: bash benchmarks/gpu_sim.sh prepare | run [all | sim | train]   (see the top of this script)"; exit 2 ;;
esac
