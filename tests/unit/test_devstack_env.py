"""`make run` gives each child only its own variables: the edge's admin and key settings reach the
edge (an operator's ADMIN_KEY would otherwise leave the admin API a 404 under `make run`), and no worker."""

from __future__ import annotations

from tools.devstack import SERVICE_ENV, service_env

OPERATOR = {
    "ADMIN_KEY": "admin-secret-1",
    "API_KEY_PREFIX": "acme-",
    "SYDNEY_UPLOAD_MAX_BYTES": "1048576",
    "USAGE_RETENTION_DAYS": "7",
    "AUTH_TOKEN": "gateway-key",
    "OPENAI_API_KEY": "upstream-key",
}


def test_the_edge_gets_its_admin_key_prefix_upload_limit_and_retention() -> None:
    env = service_env("edge", OPERATOR)
    assert env == {k: v for k, v in OPERATOR.items() if k != "OPENAI_API_KEY"}


def test_no_worker_gets_the_admin_key_or_the_gateway_key() -> None:
    for service in SERVICE_ENV:
        if service == "edge":
            continue
        env = service_env(service, OPERATOR)
        assert "ADMIN_KEY" not in env and "AUTH_TOKEN" not in env, service
