"""Configuration: one TOML file, validated against the registered sections."""

from ..errors import ConfigError, ConfigIssue
from .loader import (DEFAULT_TOML, FACTORY_PATH, Config, factory_text, load_default, load_file,
                     load_text)

__all__ = ["Config", "ConfigError", "ConfigIssue", "DEFAULT_TOML", "FACTORY_PATH", "factory_text",
           "load_default", "load_file", "load_text"]
