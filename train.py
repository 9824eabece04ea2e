"""physai's entry point: ``python train.py [overrides]`` composes configs/ and runs the pipeline.

Examples::

    python train.py                                  # default task and algorithm
    python train.py experiment=smoke                 # every stage on a tiny budget
    python train.py env=hopper algo=sac              # a tuned preset
    python train.py env.id=Walker2d-v5               # any gymnasium id
    python train.py -m seed=0,1,2                    # a Hydra sweep
    python train.py -m seed=0,1,2 hydra/launcher=ray # its trials in parallel on Ray
"""

import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from physai.config import register_configs
from physai.run.cli import route_env_id, run_composed
from physai.run.sweeps import objective

register_configs()


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    # The evaluation mean return: what Hydra sweepers (optuna) maximize; None when the run has none.
    return objective(run_composed(cfg))


if __name__ == "__main__":
    sys.argv = route_env_id(sys.argv)
    main()
