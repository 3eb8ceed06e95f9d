"""The browser-agent protocol of ChatGPT-API-server (fact sheet agent-protocol.md), sans-I/O."""
