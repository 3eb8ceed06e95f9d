"""A fake of the ChatGPT web "backend-api" (fact sheet /work/shared/upstreams/chatgpt-web.md, §1.2,
§1.3, §2, §3, checklist §8), served by the sandbox process next to its OpenAI fake.

Users are short names: `alice` is user_id `user-alice`, email `alice@sandbox.invalid`. A session
cookie `__Secure-next-auth.session-token=sandbox-session-alice` is alice's session without any setup;
POST /_sandbox/chatgpt/sessions registers opaque ones (optionally rotating). Control routes: control.py.

Choices where the sheet is silent:
- Auth: a missing bearer gets 401 {"detail": "Unauthorized - Access token is missing"}, a token the
  fake did not mint 401 {"detail": "Could not parse your authentication token..."}; expired or revoked
  ones the sheet's token_expired body. Auth comes before everything else, then (POST /conversation)
  the one-turn-at-a-time 429, whose status the sheet could not determine.
- A model slug not permitted for the user: 404 {"detail": {"message", "code": "model_not_found"}}.
- `auto` is answered by `gpt-4o` (metadata.model_slug); metadata.default_model_slug is the asked slug.
- A new conversation's root node is the client's parent_message_id (message null); no system node.
- The answer: words of generate.tokens(seed_of(<last user text, directives stripped>), choice, n), n
  from `[sandbox tokens=N]` (default 16), joined by spaces; `choice` is 0 for `next`, and the number of
  earlier answers under the same user message for `variant`, so a regenerated answer differs.
- `[sandbox max_tokens_at=K]`: after K words the final event says finish_details.type max_tokens
  (status finished_successfully, end_turn true, as for stop). `continue` on it writes a NEW assistant
  message, child of the cut one, holding only the rest, each word with its leading space: cut text +
  continuation = the uncut answer. `continue` on a message not cut by max_tokens is a 400.
- A `variant` naming a user message already in the tree answers under it (a sibling); otherwise its
  messages are added like `next`.
- Errors in the stream (`error_after=N`, fault in_stream_error = after 1 word): one
  `{"message": null, "conversation_id", "error": "Something went wrong..."}` event, then the stream
  ends without a final event or [DONE]; the partial answer stays in the tree, status
  finished_partial_completion, finish_details interrupted (also after hang + disconnect).
- `status=N` answers with the sheet's body for N where one exists (401/403/404/413/429/500).
- The stream's noise (see sse.py) is the same in every stream; moderation comes after the final message.
- Faults count down per matching request in arming order; `model` filters by the requested slug (only
  POST /conversation carries one); path `any` covers every backend-api call and the session call;
  in_stream_error only ever matches POST /conversation. A faulted request changes no state.
- PATCH on a hidden conversation answers {"success": true} and changes nothing; GET/list never show it.
  Archived conversations leave the list unless `is_archived=true` is asked.
- The requests log carries one extra field, `finish`: stop | max_tokens | error | disconnected | null.
"""

from .router import ChatGPT

__all__ = ["ChatGPT"]
