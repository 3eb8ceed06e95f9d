"""sydney-worker: Bing Chat (Sydney) on a shared pool of cookie accounts (issue 13)."""
