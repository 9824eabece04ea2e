"""Pipeline stages, one module each: ``REQUIRES``, ``PRODUCES`` and ``run(cfg, ctx)``."""
