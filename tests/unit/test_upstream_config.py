"""libs/openai_upstream/config.py under each worker's env prefix, and what openai-worker serves
with moderation models."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from libs.openai_upstream.config import Upstream, load_upstreams
from libs.settings import ConfigError
from libs.tokens import request_tokens, usage
from libs.worker_metrics import WorkerMetrics
from services.openai_worker import config as openai_config
from services.openai_worker.backend import OpenAIBackend


def test_each_worker_reads_its_own_prefix() -> None:
    env = {"OPENAI_BASE_URL": "http://chat/v1", "OPENAI_MODELS": "c",
           "EMBEDDINGS_BASE_URL": "http://emb/v1/", "EMBEDDINGS_API_KEY": "ek", "EMBEDDINGS_MODELS": "e1,e2"}
    [emb] = load_upstreams(env, "EMBEDDINGS")
    assert (emb.base_url, emb.api_key, emb.models) == ("http://emb/v1", "ek", ("e1", "e2"))
    assert load_upstreams(env, "IMAGES", required=False) == []  # none configured: allowed when asked
    with pytest.raises(ConfigError, match="IMAGES_BASE_URL and IMAGES_MODELS, or IMAGES_WORKER_CONFIG"):
        load_upstreams(env, "IMAGES")
    with pytest.raises(ConfigError, match="EMBEDDINGS_MODELS must list"):
        load_upstreams({"EMBEDDINGS_BASE_URL": "http://emb/v1"}, "EMBEDDINGS")


def test_a_config_file_is_named_per_prefix(tmp_path: Path) -> None:
    config = tmp_path / "u.toml"
    config.write_text("[[upstreams]]\nbase_url = 'http://img/v1'\nmodels = ['gpt-image-1']\n")
    [img] = load_upstreams({"IMAGES_WORKER_CONFIG": str(config)}, "IMAGES")
    assert (img.name, img.models) == ("upstream0", ("gpt-image-1",))
    config.write_text("[[upstreams]]\nbase_url = 'http://img/v1'\nmodels = []\n")
    with pytest.raises(ConfigError, match=r"IMAGES_WORKER_CONFIG upstreams\[0\]\.models"):
        load_upstreams({"IMAGES_WORKER_CONFIG": str(config)}, "IMAGES")


def test_moderation_models_are_openai_workers_only(tmp_path: Path) -> None:
    config = tmp_path / "u.toml"
    config.write_text("[[upstreams]]\nname = 'mod'\nbase_url = 'http://m/v1'\n"
                      "moderation_models = ['omni-moderation-latest']\n")
    [mod] = openai_config.load_upstreams({"OPENAI_WORKER_CONFIG": str(config)})
    assert (mod.models, mod.moderation_models) == ((), ("omni-moderation-latest",))  # moderations only
    with pytest.raises(ConfigError, match="answers no moderations"):
        load_upstreams({"EMBEDDINGS_WORKER_CONFIG": str(config)}, "EMBEDDINGS")
    [env_one] = openai_config.load_upstreams({"OPENAI_BASE_URL": "http://o/v1", "OPENAI_MODELS": "",
                                              "OPENAI_MODERATION_MODELS": "text-moderation-latest"})
    assert (env_one.models, env_one.moderation_models) == ((), ("text-moderation-latest",))
    with pytest.raises(ConfigError, match="OPENAI_MODERATION_MODELS needs OPENAI_BASE_URL"):
        openai_config.load_upstreams({"OPENAI_MODERATION_MODELS": "text-moderation-latest",
                                      "OPENAI_WORKER_CONFIG": str(config)})


def test_openai_worker_serves_moderation_models_and_its_chat_features_are_its_chat_upstreams() -> None:
    ups = [Upstream("chat", "http://c/v1", "", ("gpt", "both")),
           Upstream("mod", "http://m/v1", "", (), native_n=False, completions=False,
                    moderation_models=("omni-moderation-latest", "both"))]
    backend = OpenAIBackend(ups, WorkerMetrics(CollectorRegistry(), "p"))
    assert backend.serves == {"both": ["chat", "completion", "moderation"], "gpt": ["chat", "completion"],
                              "omni-moderation-latest": ["moderation"]}
    assert backend.features == ["chat", "tools", "n", "completion"]  # the moderation upstream has no say
    assert [u.name for u in backend.moderation.candidates("both")] == ["mod"]
    assert [u.name for u in backend.failover.candidates("both")] == ["chat"]


@pytest.mark.parametrize(("body", "tokens"), [
    ({"input": "abcdefgh"}, 2),
    ({"input": ["abcd", "efgh"]}, 3),  # joined by a space: 9 characters
    ({"input": [1, 2, 3]}, 3),  # token ids count as they are
    ({"input": [[1, 2], [3]]}, 3),
    ({"input": [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {"url": "x"}}]}, 2),
    ({"prompt": "abcd"}, 1),
    ({"messages": [{"role": "user", "content": "abcd"}]}, 1),
    ({}, 0),
])
def test_request_tokens_of_every_input_shape(body: dict[str, object], tokens: int) -> None:
    assert request_tokens(body) == tokens


def test_reported_usage_is_completed_to_the_reply_contract() -> None:
    # an embeddings upstream reports no completion_tokens; the end reply requires them
    assert usage({"prompt_tokens": 5, "total_tokens": 5}, {}) == {
        "prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5, "estimated": False}
