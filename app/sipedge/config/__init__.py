"""Configuration: one TOML file, validated against the registered sections."""

from ..errors import ConfigError, ConfigIssue
from .loader import DEFAULT_TOML, Config, load_default, load_file, load_text

__all__ = ["Config", "ConfigError", "ConfigIssue", "DEFAULT_TOML", "load_default", "load_file",
           "load_text"]
