"""chatgpt-web-worker's configuration: accounts from tokens and a TOML file, models and aliases,
errors naming the variable, every secret held for scrubbing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from libs import secrets
from libs.settings import ConfigError
from services.chatgpt_web_worker.config import load_config, token_account_name
from services.chatgpt_web_worker.native import NativeCalls
from services.chatgpt_web_worker.parts import WebParts

TOKEN = "eyJhbGciOiJSUzI1NiI.test-token-one.sig"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return str(path)


def test_no_account_says_which_variables_to_set() -> None:
    with pytest.raises(ConfigError, match="CHATGPT_ACCESS_TOKENS or CHATGPT_ACCOUNTS_FILE"):
        load_config({})


def test_tokens_and_a_file_make_accounts_named_without_their_secrets(tmp_path: Path) -> None:
    file = write(tmp_path, '[[accounts]]\nname = "work"\nsession_token = "cookie-value-xyz"\nmodels = ["gpt-4o"]\n'
                           'proxy = "http://user:proxy-pass@127.0.0.1:3128"\n')
    config = load_config({"CHATGPT_ACCESS_TOKENS": TOKEN, "CHATGPT_ACCOUNTS_FILE": file})
    names = [a.name for a in config.accounts]
    assert names == [token_account_name(TOKEN), "work"] and TOKEN not in names[0]
    assert config.accounts[1].models == frozenset({"gpt-4o"})
    assert config.base_url == "https://chatgpt.com"
    assert "cookie-value-xyz" not in repr(config) and "proxy-pass" not in repr(config)
    scrubbed = secrets.scrub(f"upstream said {TOKEN} and cookie-value-xyz")
    assert TOKEN not in scrubbed and "cookie-value-xyz" not in scrubbed


def test_aliases_map_openai_names_onto_served_slugs() -> None:
    config = load_config({"CHATGPT_ACCESS_TOKENS": TOKEN, "CHATGPT_MODELS": "gpt-4o,auto"})
    assert config.slug_for("gpt-4") == "gpt-4o" and config.slug_for("auto") == "auto"
    assert config.slug_for("gpt-3.5-turbo") is None  # its slug is not served here
    custom = load_config({"CHATGPT_ACCESS_TOKENS": TOKEN, "CHATGPT_MODEL_ALIASES": "fast=gpt-4o-mini"})
    assert custom.slug_for("fast") == "gpt-4o-mini"


@pytest.mark.parametrize(("env", "names"), [
    ({"CHATGPT_BASE_URL": "ftp://x"}, "CHATGPT_BASE_URL"),
    ({"CHATGPT_AUTH_URL": "nope"}, "CHATGPT_AUTH_URL"),
    ({"CHATGPT_MODEL_ALIASES": "x=not-served"}, "CHATGPT_MODEL_ALIASES"),
])
def test_bad_values_name_their_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config({"CHATGPT_ACCESS_TOKENS": TOKEN, **env})


@pytest.mark.parametrize(("toml", "message"), [
    ('[[accounts]]\nname = "a b"\naccess_token = "t"\n', "name must be"),
    ('[[accounts]]\nname = "a"\n', "needs an access_token or a session_token"),
    ('[[accounts]]\nname = "a"\naccess_token = "t"\nmodels = ["gpt-9"]\n', "does not serve"),
    ('[[accounts]]\nname = "a"\naccess_token = "t"\ncolour = "red"\n', "unknown keys"),
    ('[[accounts]]\nname = "a"\naccess_token = "t"\n[[accounts]]\nname = "a"\naccess_token = "u"\n', "unique"),
])
def test_a_bad_accounts_file_says_what_is_wrong(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({"CHATGPT_ACCOUNTS_FILE": write(tmp_path, toml)})


async def test_login_without_a_configured_service_is_a_501_naming_the_setting() -> None:
    config = load_config({"CHATGPT_ACCESS_TOKENS": TOKEN})
    unused: Any = None
    calls = NativeCalls(WebParts(config, unused, unused, unused, unused))
    answer = await calls._login({"username": "a", "password": "b"})
    assert answer["status"] == 501 and "CHATGPT_AUTH_URL" in answer["body"]["error"]["message"]


def test_live_model_lists_limit_each_account_and_what_is_served(tmp_path: Path) -> None:
    from services.chatgpt_web_worker.config import with_live_models

    file = write(tmp_path, '[[accounts]]\nname = "a"\naccess_token = "t1"\n'
                           '[[accounts]]\nname = "b"\naccess_token = "t2"\nmodels = ["gpt-4o", "o1"]\n'
                           '[[accounts]]\nname = "c"\naccess_token = "t3"\n')
    config = load_config({"CHATGPT_ACCOUNTS_FILE": file})
    live = with_live_models(config, {"a": frozenset({"gpt-4o-mini"}), "b": frozenset({"gpt-4o", "auto"})})
    models = {a.name: a.models for a in live.accounts}
    assert models == {"a": frozenset({"gpt-4o-mini"}), "b": frozenset({"gpt-4o"}), "c": None}
    assert set(live.models) == set(config.models)  # "c" did not answer: it may run every configured slug
    narrowed = with_live_models(load_config({"CHATGPT_ACCESS_TOKENS": "t9"}), {token_account_name("t9"): frozenset(
        {"gpt-4o"})})
    assert narrowed.models == ("gpt-4o",) and narrowed.slug_for("gpt-4") == "gpt-4o"
    assert narrowed.slug_for("gpt-3.5-turbo") is None
