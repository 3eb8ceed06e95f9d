"""A fake of Bing Chat ("Sydney"), served by the sandbox process next to its OpenAI and ChatGPT web fakes.
It speaks the protocol of the fact sheet /work/shared/upstreams/sydney.md (§1-§7, checklist §10) and
shares no code with any client of it: it exists to catch the worker's bugs.

Routes (the worker's SYDNEY_CREATE_URL, SYDNEY_CHATHUB_URL and BING_BASE_URL point here):
- GET /edgesvc/turing/conversation/create, GET /turing/conversation/create (§1)   create.py
- GET /sydney/ChatHub, the SignalR JSON websocket (§2, §3, §4)                    hub.py, answer.py
- POST /images/kblob, GET /images/blob?bcid= (§6)                                 kblob.py
- GET /images/create, GET /images/create/async/results/<ID>, GET /th/id/<name> (§7)  creator.py
- /_sandbox/bing/* control API                                                    control.py

Accounts: the Cookie header is split on ';' and each piece on its first '=' (values keep their '=').
`_U=sandbox-u-<name>` (name [a-z0-9-]+) is the signed-in account <name>; no `_U` (or an empty one) is
an anonymous conversation; any other `_U` gets 200 {"result": {"value": "UnauthorizedRequest", ...}}
with no conversation and no signature headers.

Directives, written in the chat prompt (several brackets merge; unknown ones or bad values give an
InvalidRequest result naming them):
  [sandbox tokens=N]        the generated part of the answer is N words (default 16)
  [sandbox search]          InternalSearchQuery, InternalSearchResult (JSON array text, 3 results on
                            https://sandbox.invalid/search/...), then the text message whose card text
                            starts with `[n]: <url> ""` lines and a blank line (§3.7 empty-title form)
  [sandbox image]           after the text, a GenerateContentQuery contentType IMAGE message whose text
                            is "a picture of <prompt>" plus the creator directives below, so the image
                            creator accepts it and obeys them
  [sandbox loading]         an InternalLoaderMessage ("Generating answers for you...") first
  [sandbox apology=K]       after K words the message turns into an Apology (contentOrigin Apology, same
                            messageId); K=0: the first bot message is the Apology (with cursor)
  [sandbox shrink]          mid-way through the (first) message the text loses its last word once,
                            then grows on from there (texts w1, w1 w2, w1, w1 w2 w3, ...; §3.5)
  [sandbox result=V]        a type:2 error result V (Throttled, CaptchaChallenge, InvalidSession,
                            UnauthorizedRequest, InvalidRequest, ProcessingMessage) + type:3, at once
                            (no throttling frame) or after K words with [sandbox after=K]
  [sandbox close7]          a type:7 close record then a normal websocket close (1000); at once, or
                            after K words with after=K
  [sandbox drop]            the TCP connection closes with no close frame (client sees 1006) and no
                            type:2, after K words (after=K; default: half the words)
  [sandbox silence_ms=N]    nothing at all (not even pings) for N ms, after K >= 1 words (after=K;
                            default: half the words), then the answer goes on
  [sandbox latency_ms=N]    N ms between the frames of the answer
  [sandbox two_messages]    two untyped bot messages (the words split in half), each with its own
                            messageId and cursor on its first frame
  In the image prompt (`q` of /images/create), carried there by [sandbox image]:
  [sandbox polls=P]         the results page is empty for the first P polls (default 2)
  [sandbox rejected]        the results page says `Please try again or come back later.`
  [sandbox never]           the results page stays empty forever
  "Words" are counted over the cumulative text, one word more per frame, across messages.

The answer (answer.answer_words, importable by tests): "I see your image." when message.imageUrl
names an uploaded blob by its `bcid` query ("I cannot see your image." for any other imageUrl), then
"I read your context of <len> characters." when previousMessages[0].description is not blank, then N
words of services.sandbox.generate.tokens(seed_of(<prompt without directives>), 0, N), joined by spaces.

Choices where the sheet is silent:
- Upgrade without sec_access_token, or with one this fake did not issue (also: forgotten after
  10 000 newer conversations): HTTP 401 {"result": {"value": "UnauthorizedRequest", ...}} instead of
  101 (ASGI websocket.http.response). The token is read as a form-decoded query, so an unescaped '+'
  becomes a space and fails. The upgrade's cookies are recorded, never checked against the token.
- Frames: every record must end with 0x1E; a bad frame (unterminated record, not JSON, binary) gets a
  type:7 {"error": "Connection closed with an error. (sandbox: <why>)", "allowReconnect": false}
  then close 1000. A first record that is not the handshake gets {"error": ...} and close 1000. Client
  type:6 is never echoed; client type:7 closes the socket. Several invocations per socket are answered
  in turn. The hub sends its own {"type":6} frame after 10 s without sending, and every answer's first
  text frame carries a {"type":6} record before its update (two records in one frame).
- Answer order: throttling-only type:1 (count = this turn's number), [loader], [search query, search
  result], text message(s), [GenerateContentQuery], then ONE frame with type:2 and type:3. The type:2
  item: user echo, then every bot message in stream order; suggestedResponses on its last message;
  result.message = the final text. Typed messages carry no cursor; only untyped text does.
- Invocation checks (InvalidRequest result naming the field): invocationId a string, arguments[0]
  with message.text non-empty, conversationId, participant.id (strings), optionsSets a list of strings,
  imageUrl string or null. conversationId not the token's, or the conversation expired
  (SANDBOX_BING_CONVERSATION_TTL seconds, default 21600; POST /_sandbox/bing/expire) → InvalidSession
  with the sheet's message; participant.id not the clientId → InvalidRequest. isStartOfSession,
  tone and optionsSets are recorded, never enforced; the throttling count grows per answered turn
  (max 30 is shown, not enforced); error results do not count.
- Faults armed per account (or "any"; anonymous conversations match only "any") are consumed in arming
  order; a chat fault is taken only by a valid invocation, and wins over the prompt's directives:
  result kinds answer at once, close7 at once, drop after half the words. create_status=<code>
  answers the create with that status and a text body (2xx gives a non-JSON 200).
- Create sets `MUIDB` when the request has none, and on every create a rotating `_RwBf` whose value
  holds '=' and '&'. kblob: 400 text on a bad form (no boundary, missing field, knowledgeRequest not
  the nested JSON, imageBase64 not strict base64); bytes that are not PNG/JPEG/GIF/WEBP →
  {"blobId":"","processedBlobId":""}; an upload by imageInfo.url alone (sydney.py) is accepted without
  fetching and its blob serves 404. Cookies are not required on kblob (SydneyQt sends none).
- Image creator: a missing, anonymous or unknown `_U` gets a page without the gir div; the result id is
  `1-<hex>`; polls need the creating account's `_U` (else 403); 4 thumbnails
  `<base>/th/id/OIG.<hex>-<k>?w=270&h=270&c=6&r=0&o=5&pid=ImgGn` (base from the Host header) serve a
  64x64 PNG. Per-account faults do not apply to the creator.
- State is bounded: 10 000 conversations, 256 blobs / 64 MiB, 1 000 image jobs, 5 000 log records.

Control API (control.py): POST faults {"account", "kind", "times"?=1}; GET faults; GET/DELETE
requests; GET stats; POST expire {"conversationId"?}; POST reset. The requests log keeps for each
record `kind` (create | chathub | chat | kblob | blob | creator | creator_poll | thumbnail), `path`,
`account`, `cookies` (NAMES only), and per kind: the upgrade's headers (Cookie as names), the token
verdict; for chat the invocation summary (text, context, tone, optionsSets, imageUrl,
isStartOfSession, invocationId, conversationId, participantId), fault, image and result.
"""

from .router import Bing, handles

__all__ = ["Bing", "handles"]
