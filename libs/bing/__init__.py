"""The Bing Chat ("Sydney") protocol, as SydneyQt speaks it (fact sheet
/work/shared/upstreams/sydney.md), shared by every worker that talks to Bing.

Sans-I/O, tested on bytes: `cookies`, `signalr` (framing), `conversation` (create answer),
`invocation` (the type:4 request), `turn` (one turn's records → typed items), `context`
(OpenAI messages → prompt + context), `headers`, `kblob`, `gojson`. The only I/O is `client`
(httpx for create/upload, websockets for ChatHub). Errors: `errors`.
"""
