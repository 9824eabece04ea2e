"""The world-model computer (installed as ``physai.synthetic``).

Learned dynamics models, scenario prompts and synthetic rollouts with provenance live here;
the pipeline's ``collect``, ``world_model`` and ``synthesize`` stages plug into this package.
"""
