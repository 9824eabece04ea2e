"""One exception type for every mistake a user can fix, so the CLI can print it cleanly."""


class PhysaiError(Exception):
    """A problem with the user's input: the message names what was wrong and how to fix it."""


class ConfigError(PhysaiError):
    """A configuration value that is unknown, mistyped, out of range or inconsistent."""


class ExistingRunError(ConfigError):
    """A run directory already holds a run that this one would overwrite or relabel; it is left as it is."""


class BundleError(PhysaiError):
    """A deployment bundle that is missing, corrupted or of an unsupported format."""
