"""Structured configs (the schema of ``configs/``) and their validation."""

from physai.config.schema import register_configs
from physai.config.validate import validate_config

__all__ = ["register_configs", "validate_config"]
