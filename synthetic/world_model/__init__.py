"""A probabilistic ensemble dynamics model: the world model that synthetic rollouts step through.

The model follows the recipe that made model-based RL work on MuJoCo tasks (PETS, MBPO,
mbrl-lib): an ensemble of MLPs, each predicting a diagonal Gaussian over the next-state
*delta* and the reward, trained with the Gaussian negative log-likelihood on bootstrapped
minibatches, early-stopped per member on held-out MSE, and used through its best
("elite") members. Synthetic rollouts pick one random elite per row and sample from its
Gaussian (TS-1), so both kinds of uncertainty show up in the data a policy learns from.

All members run in one batched pass: every weight has a leading ``members`` dimension and
the layers are ``torch.baddbmm`` calls, so a 7-member ensemble costs one kernel per layer.

Differences from mbrl-lib/MBPO, each for a reason:

* A learned termination head (Bernoulli logit, class-weighted BCE, prior-corrected at
  inference) instead of hand-written termination functions, so any task works unchanged.
* An optional physics-context input (e.g. randomized mass or friction), so one model serves
  a domain-randomized task instead of averaging over its parameters.
* Saved files carry their task, dims and a sha256 checked on load; a model trained for
  another task, or a corrupted file, is refused before it can generate plausible nonsense.
* Early stopping also checks the *starting* weights on a refit, so an incremental refit never
  ends worse on validation than the weights it started from.
* Observation columns whose next value is an exact affine function of ``[obs, act, context]``
  on every training row (a ``last_action`` term, a constant) are found at fit time and predicted
  by that rule with zero variance instead of by the network. A network only approximates them,
  and in the Gaussian NLL a noiseless column drives its variance to the lower bound, so it then
  outweighs the noisy columns ~e^10 to 1 and takes over the shared layers' gradient.

The package, by responsibility: ``network`` (the ensemble and inference), ``fitting`` (training),
``exact_columns`` (the exact-rule columns) and ``file_format`` (saving and loading, checksummed).
"""

from physai.synthetic.world_model.settings import INFERENCE_CHUNK_ROWS, EnsembleConfig, WorldModelError
from physai.synthetic.world_model.file_format import (FORMAT_NAME, FORMAT_VERSION, READABLE_FORMAT_VERSIONS,
                                                      sidecar_path)
from physai.synthetic.world_model.network import EnsembleDynamicsModel, EnsembleLinear

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "INFERENCE_CHUNK_ROWS", "READABLE_FORMAT_VERSIONS", "EnsembleConfig",
           "EnsembleDynamicsModel", "EnsembleLinear", "WorldModelError", "sidecar_path"]
