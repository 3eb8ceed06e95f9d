"""sydney-worker's configuration: Bing and its accounts (libs/bing/config.py), and the models.

    SYDNEY_MODEL_ALIASES  optional `name=style,...`: more model names, each on a conversation
                          style (Creative, Balanced, Precise or Designer, any case)

Served (announced) models: `sydney-creative`, `sydney-balanced`, `sydney-precise` (chat and the
native `sydney` kind) and the aliases (chat). A chat job for any other model (an operator routed
it here with SY_ROUTES or SY_DEFAULT_POOL) gets the style SydneyQt's webapi gives it: a name
starting `gpt-3.5-turbo` is Balanced, anything else Creative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from libs.bing.config import BingConfig, load_bing_config
from libs.settings import ConfigError, env_list

MODELS = {"sydney-creative": "Creative", "sydney-balanced": "Balanced", "sydney-precise": "Precise"}
STYLES = ("Creative", "Balanced", "Precise", "Designer")  # the tones SydneyQt's NewSydney knows
_BY_LOWER = {s.lower(): s for s in STYLES}


@dataclass(frozen=True)
class SydneyConfig:
    bing: BingConfig
    aliases: Mapping[str, str] = field(default_factory=dict)  # model name -> style

    def style_for(self, model: str) -> str:
        """The conversation style a chat job's model asks for (seed 000's mapping for the rest)."""
        style = MODELS.get(model) or self.aliases.get(model)
        if style is not None:
            return style
        return "Balanced" if model.startswith("gpt-3.5-turbo") else "Creative"


def parse_aliases(items: list[str]) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for item in items:
        name, sep, style = (part.strip() for part in item.partition("="))
        if not sep or not name or not style:
            raise ConfigError(f"SYDNEY_MODEL_ALIASES: {item!r} is not name=style")
        if style.lower() not in _BY_LOWER:
            raise ConfigError(f"SYDNEY_MODEL_ALIASES: {name}: style must be one of {', '.join(STYLES)}")
        if name in MODELS:
            raise ConfigError(f"SYDNEY_MODEL_ALIASES: {name} is already a served model")
        aliases[name] = _BY_LOWER[style.lower()]
    return aliases


def load_config(env: Mapping[str, str] | None = None) -> SydneyConfig:
    """ConfigError naming the variable when something is wrong."""
    return SydneyConfig(load_bing_config(env), parse_aliases(env_list("SYDNEY_MODEL_ALIASES", env)))
