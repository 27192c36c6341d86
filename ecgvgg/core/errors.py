"""Errors that the command line turns into exit status 2 with one clear line."""

from __future__ import annotations


class DataError(ValueError):
    """Input data is missing, unreadable or invalid; the message names the file, column and row."""


class ConfigError(ValueError):
    """A pipeline configuration is invalid; the message names the YAML path and the allowed values."""
