"""Configuration: one TOML file, validated against the registered sections."""

from ..errors import ConfigError, ConfigIssue
from .loader import (DEFAULT_TOML, FACTORY_PATH, Config, config_relative, factory_text,
                     load_default, load_file, load_text)

__all__ = ["Config", "ConfigError", "ConfigIssue", "DEFAULT_TOML", "FACTORY_PATH", "config_relative",
           "factory_text", "load_default", "load_file", "load_text"]
