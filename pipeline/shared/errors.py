"""The errors every layer may raise, at the bottom of the layers so that any of them can."""


class ConfigError(ValueError):
    """The configuration cannot run (a value, a file, a runner); the message names the key or option."""
