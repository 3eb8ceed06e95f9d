"""A fake browser agent of ChatGPT-API-server (agent-protocol.md §3, §7, §8), for tests of the agent bridge.

    python -m services.sandbox.agent --server ws://127.0.0.1:PORT/client/register
                                     [--name N] [--count K] [--reconnect-ms MS]

It opens K websockets to `--server` (K agents, each one ChatGPT account of its own), registers each
as the Firefox agent does (§3.4), answers every ping at once (§3.3), and answers each job (§7) with
content derived from the prompt, so a test can assert it:

    content = "<name> #<turn>: <prompt>"     e.g. "agent #1: Hello world", then "agent #2: And then?"

`<name>` is `--name` (default `agent`), or `<name>-<i>` (i = 1..K) when K > 1; `<turn>` counts the
user messages of the conversation (1 for a new one). The prompt is echoed verbatim, directives included.

Directives, written anywhere in the prompt, several brackets merged left to right:
    [agent delay_ms=N]   wait N ms before doing anything else with the job (answering, error, die)
    [agent error=TEXT]   answer with the Firefox agent's error frame, `data` = TEXT (TEXT runs to the
                         `]`, so `error=` is the last item of its bracket)
    [agent die]          close the socket (code 1001, as a page unload does) instead of answering
    [agent silent]       never answer this job (the Python agent's way of failing, §3.3); pings and
                         other jobs are still answered
An unknown or malformed directive is answered with an error frame naming it (a typo never passes).

Conversations (kept per agent, across reconnects: they live upstream, in the account):
- `conversation_id == ""`: a new conversation; a fresh UUID conversation_id and response_id;
- a known conversation_id whose tree holds `parent_id` (any earlier message_id or response_id of it,
  or the root parent of its first request): the conversation continues, turn + 1;
- an unknown conversation_id (upstream: 404 "Conversation not found") or a parent_id foreign to the
  conversation (upstream refuses it) is answered as the final Firefox agent answers any upstream failure:
  `{"id": R, "message": "error", "data": "Unknown error", "error": {}}`, socket left open.

Choices where the sheet is silent:
- frames are compact JSON with keys in the Firefox agent's order (`id`, `message`, `data`), and
  `error: {}` only on error frames (JSON.stringify drops the undefined `error` elsewhere);
- jobs run concurrently, so pings are answered while a job waits (the Firefox agent is event-driven);
- a `Connection id` frame after registration is answered again with the stored id (as the Firefox
  agent's handler would); unknown kinds and unparseable frames are logged to stderr and ignored;
  a job whose `data` is not JSON gets no answer (the Firefox agent throws before its try block);
- an empty `message_id` is replaced by a fresh UUID (as the Python agent does);
- `--reconnect-ms MS` (default: off): after its socket closes, an agent reconnects after MS ms and
  reclaims its stored id, as a reloaded page does; without it the agent ends, and the process exits
  (status 0) when all have ended; a first connection that fails exits with status 1 (without
  `--reconnect-ms`) or is retried every MS ms;
- stdout gets one line per event a test may wait for: `agent <name> registered as <id>` and
  `agent <name> closed`.
This package shares no code with the gateway (it must not import libs.agents): its own reading of
the sheet checks the gateway's.
"""
