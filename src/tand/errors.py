"""Exceptions that the task layer and the API turn into one clear message."""


# MLflow error codes that mean "no such model, version or alias" (as opposed to "cannot reach the store").
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class TandError(Exception):
    """A known failure: its message names the problem and the fix."""


class ConfigError(TandError):
    """config.json is missing, malformed or invalid."""


class DataError(TandError):
    """The dataset cannot be used as configured."""


class RegistryError(TandError):
    """The MLflow tracking server or model registry cannot do what was asked."""
