"""Exceptions that the task layer and the API turn into one clear message."""


class TandError(Exception):
    """A known failure: its message names the problem and the fix."""


class ConfigError(TandError):
    """config.json is missing, malformed or invalid."""


class DataError(TandError):
    """The dataset cannot be used as configured."""


class RegistryError(TandError):
    """The MLflow tracking server or model registry cannot do what was asked."""
