"""The OpenAI-compatible upstream client every worker shares.

- config.py: `Upstream` and `load_upstreams(env, prefix, required=, moderation=)` (env vars or TOML);
- call.py: `UpstreamCall` (one POST, streamed or whole), `error_for_status` (statuses to our
  error tree), `proxy_for` / `proxy_for_url`, `plain_http` (which client);
- clients.py: `UpstreamClients`, the clients of one worker's upstreams (`call`, a size-limited `get`);
- failover.py: `Failover`, the order upstreams are tried in and failing over before any output;
- unary.py: `post_json`, a whole JSON answer with failover (moderations, embeddings, images).
"""

from libs.openai_upstream.call import UpstreamCall, error_for_status, plain_http, proxy_for, proxy_for_url
from libs.openai_upstream.clients import UpstreamClients
from libs.openai_upstream.config import Upstream, load_upstreams
from libs.openai_upstream.failover import Failover
from libs.openai_upstream.unary import post_json

__all__ = [
    "Failover", "Upstream", "UpstreamCall", "UpstreamClients", "error_for_status", "load_upstreams", "plain_http",
    "post_json", "proxy_for", "proxy_for_url",
]
