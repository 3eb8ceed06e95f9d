"""agent-bridge: ChatGPT-API-server's browser agents (seed 002) served to the bus as the `agents` pool."""
