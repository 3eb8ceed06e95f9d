"""The built-in embeddings model (all-MiniLM-L6-v2 int8 ONNX), run for real: semantics, masking, token arrays,
context limit, and loading with the network blocked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from services.embeddings_worker.local_model import LocalModel, TokenIdError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> LocalModel:
    return LocalModel.load()


def test_shape_of_the_model(model: LocalModel) -> None:
    assert (model.name, model.dimensions, model.vocab_size, model.context_tokens) == (
        "all-MiniLM-L6-v2",
        384,
        30522,
        256,
    )


def test_similar_texts_are_closer_and_vectors_are_unit_norm(model: LocalModel) -> None:
    texts = ["a cat sits on the mat", "a kitten on a rug", "stock market falls"]
    cat, kitten, stocks = model.embed(model.tokenize(texts))
    assert cat.shape == (384,) and cat.dtype == np.float32
    assert float(cat @ kitten) > float(cat @ stocks) + 0.2
    norms = np.linalg.norm(np.stack([cat, kitten, stocks]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_alone_equals_in_a_padded_mixed_length_batch(model: LocalModel) -> None:
    texts = ["hi", "a cat sits on the mat", "the quarterly report " * 30, "stock market falls as rates rise again"]
    ids = model.tokenize(texts)
    assert len({len(i) for i in ids}) == len(texts)  # really mixed lengths, so the short ones are padded
    together = model.embed(ids)
    for row, one in enumerate(ids):
        np.testing.assert_allclose(model.embed([one])[0], together[row], atol=1e-4)


def test_token_array_input_equals_the_texts_embedding(model: LocalModel) -> None:
    text = "a cat sits on the mat"
    [with_specials] = model.tokenize([text])
    assert with_specials[0] == model.cls_id and with_specials[-1] == model.sep_id
    bare = with_specials[1:-1]
    assert model.check_ids([bare, with_specials]) == [with_specials, with_specials]
    from_text, from_array = model.embed([with_specials, *model.check_ids([bare])])
    np.testing.assert_allclose(from_array, from_text, atol=1e-6)
    assert model.check_ids([[]]) == [[model.cls_id, model.sep_id]]


@pytest.mark.parametrize(
    ("arrays", "index", "position"),
    [
        ([[2000, 2001], [2000, 30522]], 1, 1),  # one past the vocabulary
        ([[-1]], 0, 0),
        ([[2000], [2000], [2000, 2001, 7.0]], 2, 2),  # a float is not an id, even a whole one
        ([[True]], 0, 0),  # nor a bool
    ],
)
def test_ids_outside_the_vocabulary_are_refused_with_their_index(
    model: LocalModel, arrays: list[list[int]], index: int, position: int
) -> None:
    with pytest.raises(TokenIdError) as refused:
        model.check_ids(arrays)
    assert (refused.value.index, refused.value.position) == (index, position)
    assert f"input[{index}][{position}]" in str(refused.value)
    assert isinstance(refused.value, ValueError)


def test_too_long_input_is_detected_not_truncated(model: LocalModel) -> None:
    # tokenizer.json ships with truncation at 128: a 300-word text must come back whole, and be refused.
    short, long = model.tokenize(["a cat", "word " * 300])
    assert len(long) == 302 > model.context_tokens
    assert model.first_too_long([short, long]) == 1
    with pytest.raises(ValueError, match=r"input\[1\] has 302 tokens"):
        model.embed([short, long])
    at_limit = [model.cls_id, *long[1 : model.context_tokens - 1], model.sep_id]
    assert model.first_too_long([at_limit]) is None
    assert model.embed([at_limit]).shape == (1, 384)


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network is off in this test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from services.embeddings_worker.local_model import LocalModel

    model = LocalModel.load()
    vectors = model.embed(model.tokenize(["offline", "still works"]))
    assert vectors.shape == (2, 384), vectors.shape
    assert not attempts, attempts
    print("offline ok")
    """
)


def test_loads_and_embeds_with_the_network_blocked() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "offline ok"
