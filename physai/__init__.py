"""physai: a Physical-AI robotics training framework.

Three computers in one loop: simulate (``physai.envs``), train on real and synthetic
experience (``physai.train``, ``physai.synthetic``), deploy to an edge budget
(``physai.edge``, ``physai.deploy.devices``). ``python train.py`` runs the pipeline.
"""

__version__ = "0.1.0"
