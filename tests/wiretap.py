"""A subscriber on `>` that checks every bus message against proto/ (subjects and schemas)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import proto
from libs.errors import ReplyGap
from services.edge.replies import Fragments


class Wiretap:
    def __init__(self) -> None:
        self.violations: list[str] = []
        self.seen: Counter[str] = Counter()  # schema id (or "system") → count
        self.messages: list[tuple[str, dict[str, Any]]] = []  # (schema id, message), application only
        self._validators: dict[str, Draft202012Validator] = {}
        self._tolerated: set[str] = set()  # subjects a test breaks the contract on, on purpose
        self._fragments: dict[str, Fragments] = {}  # reply subject -> parts so far (the edge's joiner)
        self._kinds: dict[str, str] = {}  # job id -> its kind, for checking the body of its `result`

    async def attach(self, nc: NATS) -> None:
        await nc.subscribe(">", cb=self._on_msg, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await nc.flush()

    def _validator(self, schema_id: str) -> Draft202012Validator:
        if schema_id not in self._validators:
            self._validators[schema_id] = Draft202012Validator(proto.schema(schema_id))
        return self._validators[schema_id]

    async def _on_msg(self, msg: Msg) -> None:
        self.check(msg.subject, msg.data, msg.headers)

    def tolerate(self, subject: str) -> None:
        """A fault-injection test is about to put contract-breaking bytes on this exact subject."""
        self._tolerated.add(subject)

    def check(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        if subject in self._tolerated:
            self.seen["tolerated"] += 1
            return
        rule = proto.rule_for(subject)
        if rule is None:
            self.violations.append(f"subject not in proto/: {subject}")
            return
        if rule.schema is None:
            self.seen["system"] += 1
            return
        if rule.status_messages and not data and headers and headers.get("Status"):
            self.seen["status"] += 1  # NATS's own status message (e.g. 503 no responders)
            return
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.violations.append(f"{subject}: not JSON")
            return
        if isinstance(message, list) and rule.batches:
            self._check_batch(subject, rule.schema, message)
            return
        self._check_one(subject, rule.schema, message)
        if isinstance(message, dict) and message.get("type") == "fragment":
            self._join_fragment(subject, message)

    def _join_fragment(self, subject: str, fragment: dict[str, Any]) -> None:
        """Parts 0,1,2,... in order; the payload they join to is checked like any other."""
        fragments = self._fragments.setdefault(subject, Fragments())
        try:
            whole = fragments.add(fragment)
        except ReplyGap as gap:
            self.violations.append(f"{subject}: {gap}")
            del self._fragments[subject]
            return
        if whole is not None:
            self.seen["fragmented"] += 1
            self.check(subject, whole)

    def _check_one(self, subject: str, schema_id: str, message: Any) -> None:
        errors = sorted(self._validator(schema_id).iter_errors(message), key=lambda e: e.path)
        if errors:
            self.violations.append(f"{subject}: {errors[0].message} in {orjson.dumps(message)[:300]!r}")
        self.seen[schema_id] += 1
        if isinstance(message, dict):
            self.messages.append((schema_id, message))
            self._check_result_body(subject, schema_id, message)

    def _check_result_body(self, subject: str, schema_id: str, message: dict[str, Any]) -> None:
        """A `result` body against its kind's schema (proto's [results]), the kind read off the job."""
        if schema_id == "switchyard.v1.job":
            self._kinds[str(message.get("job_id"))] = str(message.get("kind"))
            return
        if schema_id != "switchyard.v1.reply" or message.get("type") != "result":
            return
        kind = self._kinds.get(str(message.get("job_id")))
        if kind is None:  # its job went out before the tap listened
            return
        body_schema = proto.result_schema(kind)
        if body_schema is None:
            self.violations.append(f"{subject}: a result answers a {kind} job, which has no result")
            return
        errors = sorted(self._validator(body_schema).iter_errors(message.get("body")), key=lambda e: e.path)
        if errors:
            self.violations.append(f"{subject}: {kind} result: {errors[0].message}")
        self.seen[body_schema] += 1

    def _check_batch(self, subject: str, schema_id: str, batch: list[Any]) -> None:
        """2+ messages of one job and attempt with consecutive seq, each valid on its own."""
        self.seen["batch"] += 1
        keys = {(m.get("job_id"), m.get("attempt")) if isinstance(m, dict) else None for m in batch}
        seqs = [m.get("seq") if isinstance(m, dict) else None for m in batch]
        first = seqs[0] if seqs and isinstance(seqs[0], int) else 0
        if len(batch) < 2 or len(keys) != 1 or None in keys:
            self.violations.append(f"{subject}: a batch must hold 2+ messages of one job and attempt")
        elif seqs != list(range(first, first + len(seqs))):
            self.violations.append(f"{subject}: a batch's seq must be consecutive, got {seqs}")
        for message in batch:
            self._check_one(subject, schema_id, message)

    def find(self, schema_id: str, **fields: Any) -> list[dict[str, Any]]:
        return [m for s, m in self.messages if s == schema_id and all(m.get(k) == v for k, v in fields.items())]
