"""Upstream accounts shared by every replica of a worker pool: leases, health, state in JetStream KV."""
