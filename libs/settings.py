"""Reading configuration from the environment, failing with the variable's name.

Services call these from their `Settings.from_env()` at start-up, never at import time.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "", env: Mapping[str, str] | None = None) -> str:
    return (env if env is not None else os.environ).get(name, default)


def env_int(name: str, default: int, env: Mapping[str, str] | None = None, *, minimum: int | None = None) -> int:
    raw = env_str(name, "", env).strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(
    name: str, default: float, env: Mapping[str, str] | None = None, *, positive: bool = True, zero: bool = False
) -> float:
    """A number; `positive` rejects anything not > 0, except 0 itself when `zero` (a documented "off")."""
    raw = env_str(name, "", env).strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if positive and not (value > 0 or (zero and value == 0)):
        raise ConfigError(f"{name} must be {'>= 0' if zero else '> 0'}, got {raw!r}")
    return value


def env_bool(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    raw = env_str(name, "", env).strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return default if raw == "" else False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_list(name: str, env: Mapping[str, str] | None = None) -> list[str]:
    return [item.strip() for item in env_str(name, "", env).split(",") if item.strip()]


def load_toml(name: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The TOML file named by env var `name`, or {} when the variable is unset."""
    path = env_str(name, "", env).strip()
    if not path:
        return {}
    try:
        with open(Path(path), "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{name} names {path}, which does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: {path} is not valid TOML: {exc}") from None
