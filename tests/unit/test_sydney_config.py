"""sydney-worker's models: the three styles, SYDNEY_MODEL_ALIASES, and seed 000's mapping of any
other model a route sends it (gpt-3.5-turbo* → Balanced, the rest → Creative)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.settings import ConfigError
from services.sydney_worker.backend import serves
from services.sydney_worker.config import load_config


def config(**env: str) -> Any:
    return load_config({"DEFAULT_COOKIES": "_U=sandbox-u-default-cookie", **env})


@pytest.mark.parametrize(("model", "style"), [
    ("sydney-creative", "Creative"), ("sydney-balanced", "Balanced"), ("sydney-precise", "Precise"),
    ("gpt-3.5-turbo", "Balanced"), ("gpt-3.5-turbo-0125", "Balanced"), ("gpt-3.5-turbo-16k", "Balanced"),
    ("GPT-3.5-Turbo", "Creative"),  # SydneyQt's prefix test is case-sensitive
    ("gpt-4", "Creative"), ("gpt-4-turbo", "Creative"), ("anything", "Creative"),
])
def test_a_model_maps_to_its_style(model: str, style: str) -> None:
    assert config().style_for(model) == style


def test_aliases_name_more_models_each_on_a_style() -> None:
    loaded = config(SYDNEY_MODEL_ALIASES="bing=precise, copilot-balanced = Balanced,gpt-3.5-turbo=Creative")
    assert loaded.style_for("bing") == "Precise" and loaded.style_for("copilot-balanced") == "Balanced"
    assert loaded.style_for("gpt-3.5-turbo") == "Creative"  # an alias wins over the seed's prefix rule
    assert serves(loaded) == {"sydney-creative": ["chat", "sydney"], "sydney-balanced": ["chat", "sydney"],
                              "sydney-precise": ["chat", "sydney"], "bing": ["chat"], "copilot-balanced": ["chat"],
                              "gpt-3.5-turbo": ["chat"]}


@pytest.mark.parametrize(("aliases", "says"), [
    ("bing", "not name=style"), ("=Creative", "not name=style"), ("bing=", "not name=style"),
    ("bing=Funny", "style must be one of"), ("sydney-creative=Precise", "already a served model"),
])
def test_bad_aliases_name_the_variable(aliases: str, says: str) -> None:
    with pytest.raises(ConfigError, match="SYDNEY_MODEL_ALIASES") as raised:
        config(SYDNEY_MODEL_ALIASES=aliases)
    assert says in str(raised.value)


def test_no_account_is_a_valid_configuration() -> None:
    assert load_config({}).bing.accounts == ()
