"""The embedding endpoints: deterministic vectors, and each vendor's embed wire format.

Served next to chat on the same keys and quotas:

- OpenAI ``POST /v1/embeddings``;
- Gemini ``POST /v1beta/models/{model}:embedContent`` and ``:batchEmbedContents``
  (also under ``/v1/``, which google-genai 3.x uses; it only ever posts the batch
  method on the Developer API);
- Cohere ``POST /v2/embed`` and ``POST /v1/embed`` (the ``cohere.Client`` behind
  ``langchain_cohere.CohereEmbeddings`` posts to v1).

Errors, keys and rate-limit headers come from the vendor's chat ``Wire``; this
module only parses embed requests and formats their answers.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
import uuid
from abc import ABC, abstractmethod
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._engine import BadRequest, count_tokens, text_of
from ._models import model_id
from ._quota import Refusal, Usage
from ._types import SimKey, Vendor
from ._wire import HttpAnswer, Wire

# Each model's native (largest) dimension; a request may ask for fewer.
DEFAULT_DIMENSIONS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "gemini-embedding-001": 3072,
    "gemini-embedding-2": 3072,
    "gemini-embedding-2-preview": 3072,
    "text-embedding-004": 768,
    "embed-v4.0": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
}
# For a model not in the table.
VENDOR_DIMENSIONS: dict[Vendor, int] = {"openai": 1536, "gemini": 3072, "cohere": 1024}

OPENAI_MAX_INPUTS = 2048
OPENAI_MAX_INPUT_TOKENS = 8192
OPENAI_MAX_REQUEST_TOKENS = 300_000
GEMINI_MAX_BATCH = 100
COHERE_MAX_TEXTS = 96
# embed-v4.0's Matryoshka sizes; older Cohere models refuse output_dimension.
COHERE_V4_DIMENSIONS = (256, 512, 1024, 1536)
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")

# OpenAI's answer to a malformed or oversized ``input`` (more than 2,048 items,
# an empty array or string): one vague message for all of them.
_OPENAI_BAD_INPUT = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def default_dimension(vendor: Vendor, model: str) -> int:
    """The dimension ``model`` answers with when none is asked for."""
    return DEFAULT_DIMENSIONS.get(model, VENDOR_DIMENSIONS[vendor])


def embed_vector(model: str, dimension: int, text: str) -> list[float]:
    """Return the simulator's unit vector for ``text`` under ``model``.

    Deterministic in (model, dimension, text): the first ``dimension`` values of a
    SHAKE-256 stream seeded by model and text, centred and scaled to length 1, so a
    shorter vector is the renormalised head of a longer one (as Matryoshka
    embeddings truncate). Values are float32-exact, so the float and base64
    encodings carry the same numbers.
    """
    raw = hashlib.shake_256(f"{model}\x00{text}".encode()).digest(2 * dimension)
    words = array("H", raw)
    if sys.byteorder == "big":
        words.byteswap()
    centred = [w - 32767.5 for w in words]
    norm = math.sqrt(sum(c * c for c in centred)) or 1.0
    return array("f", [c / norm for c in centred]).tolist()


def float32_base64(vector: Sequence[float]) -> str:
    """Base64 of the vector as little-endian float32, as OpenAI and Cohere send it."""
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


@dataclass(frozen=True)
class EmbedItem:
    """One input to embed: the text its vector derives from, its tokens, its size."""

    text: str
    tokens: int
    dimension: int


@dataclass(frozen=True)
class EmbedRequest:
    """An embed request, stripped of vendor format.

    Attributes:
        model: the model asked for.
        items: the inputs, in order.
        options: what the vendor's answer needs to know (encoding, types, ...).
    """

    model: str
    items: tuple[EmbedItem, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def input_tokens(self) -> int:
        """Input tokens: each text's ``ceil(len / 4)`` (token-id inputs: their count)."""
        return sum(item.tokens for item in self.items)

    def vectors(self) -> list[list[float]]:
        """One vector per item, in order."""
        return [embed_vector(self.model, item.dimension, item.text) for item in self.items]


class EmbedWire(ABC):
    """A vendor's embed dialect; everything else comes from its chat ``Wire``."""

    def __init__(self, base: Wire) -> None:
        self.base = base
        self.vendor: Vendor = base.vendor

    @abstractmethod
    def parse(self, body: Mapping[str, Any], path_model: str, method: str) -> EmbedRequest:
        """Turn a request body into a vendor-neutral embed request.

        Args:
            body: the JSON body.
            path_model: the model named in the path (Gemini), else ``""``.
            method: the endpoint (``embeddings``, ``embedContent``,
                ``batchEmbedContents``, ``v1``/``v2`` for Cohere).

        Raises:
            BadRequest: the body is not a valid request.
        """

    @abstractmethod
    def answer(self, request: EmbedRequest, rid: str) -> HttpAnswer:
        """The 200 answer (``rid``: a fresh response id)."""

    def rate_limited(self, key: SimKey, model: str, refusal: Refusal, usage: Usage) -> HttpAnswer:
        """The 429 answer: the chat wire's (its ``base`` names the limits)."""
        return self.base.rate_limited(key, model, refusal, usage)


def _dimension(value: Any, native: int, what: str) -> int:
    """Check a requested dimension: a positive int no larger than the model's own."""
    if value is None:
        return native
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= native:
        msg = f"{what} must be an integer between 1 and {native}, got {value!r}"
        raise BadRequest(msg)
    return value


# ------------------------------------------------------------------- OpenAI


class OpenAIEmbedWire(EmbedWire):
    """``POST /v1/embeddings``: strings or token-id arrays; float or base64 answers.

    Limits as OpenAI's: at most 2,048 inputs, 8,192 tokens per input and 300,000
    per request; ``dimensions`` only on the ``text-embedding-3`` models.
    """

    def parse(self, body: Mapping[str, Any], path_model: str, method: str) -> EmbedRequest:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            msg = "you must provide a model parameter"
            raise BadRequest(msg)
        raw = body.get("input")
        if isinstance(raw, str) or (
            isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)
        ):
            raw = [raw]  # one string, or one token array
        if not isinstance(raw, list) or not raw or len(raw) > OPENAI_MAX_INPUTS:
            raise BadRequest(_OPENAI_BAD_INPUT)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            msg = f"Invalid value for 'encoding_format': {encoding!r}. Use 'float' or 'base64'."
            raise BadRequest(msg)
        native = default_dimension("openai", model)
        wanted = body.get("dimensions")
        if wanted is not None and model == "text-embedding-ada-002":
            msg = "This model does not support specifying dimensions."
            raise BadRequest(msg)
        dimension = _dimension(wanted, native, "dimensions")
        items: list[EmbedItem] = []
        for entry in raw:
            if isinstance(entry, str) and entry:
                text, tokens = entry, count_tokens(entry)
            elif (
                isinstance(entry, list)
                and entry
                and all(isinstance(t, int) and not isinstance(t, bool) for t in entry)
            ):
                # Token ids are not decoded: their vector derives from the ids.
                text, tokens = "tokens:" + ",".join(map(str, entry)), len(entry)
            else:
                raise BadRequest(_OPENAI_BAD_INPUT)
            if tokens > OPENAI_MAX_INPUT_TOKENS:
                msg = (
                    f"This model's maximum context length is {OPENAI_MAX_INPUT_TOKENS} "
                    f"tokens, however you requested {tokens} tokens ({tokens} in your "
                    "prompt; 0 for the completion). Please reduce your prompt; or "
                    "completion length."
                )
                raise BadRequest(msg)
            items.append(EmbedItem(text, tokens, dimension))
        request = EmbedRequest(model, tuple(items), {"encoding_format": encoding})
        if request.input_tokens > OPENAI_MAX_REQUEST_TOKENS:
            msg = (
                f"Requested {request.input_tokens} tokens, max "
                f"{OPENAI_MAX_REQUEST_TOKENS} tokens per request"
            )
            raise BadRequest(msg)
        return request

    def answer(self, request: EmbedRequest, rid: str) -> HttpAnswer:
        as_base64 = request.options.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": float32_base64(vector) if as_base64 else vector,
            }
            for index, vector in enumerate(request.vectors())
        ]
        tokens = request.input_tokens
        body = {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return HttpAnswer(200, body)


# ------------------------------------------------------------------- Gemini


class GeminiEmbedWire(EmbedWire):
    """``models/{model}:embedContent`` and ``:batchEmbedContents``.

    A batch holds at most 100 requests (more: 400 ``INVALID_ARGUMENT``, as Google
    answers); each may set its own ``outputDimensionality``. A batch counts as
    one request against the key's limits. Whether Google counts a batch as one
    request or one per item is disputed (users report free-tier RPM/RPD
    exhausted per item); the router counts conservatively, the simulator counts
    the HTTP call.
    """

    def parse(self, body: Mapping[str, Any], path_model: str, method: str) -> EmbedRequest:
        native = default_dimension("gemini", path_model)
        if method == "embedContent":
            return EmbedRequest(path_model, (self._item(body, native, "EmbedContentRequest"),))
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            msg = "* BatchEmbedContentsRequest.requests: requests is not specified"
            raise BadRequest(msg)
        if len(requests) > GEMINI_MAX_BATCH:
            msg = (
                "* BatchEmbedContentsRequest.requests: at most "
                f"{GEMINI_MAX_BATCH} requests can be in one batch"
            )
            raise BadRequest(msg)
        items: list[EmbedItem] = []
        for index, entry in enumerate(requests):
            where = f"BatchEmbedContentsRequest.requests[{index}]"
            if not isinstance(entry, Mapping):
                msg = f"* {where}: must be an object"
                raise BadRequest(msg)
            named = entry.get("model")
            if named and model_id("gemini", str(named)) != path_model:
                msg = f"* {where}.model: model must match the model of the batch request"
                raise BadRequest(msg)
            items.append(self._item(entry, native, where))
        return EmbedRequest(path_model, tuple(items), {"batch": True})

    def _item(self, entry: Mapping[str, Any], native: int, where: str) -> EmbedItem:
        content = entry.get("content")
        if not isinstance(content, Mapping) or not isinstance(content.get("parts"), list):
            msg = f"* {where}.content: content is not specified"
            raise BadRequest(msg)
        text = text_of(content["parts"])
        dimension = _dimension(
            entry.get("outputDimensionality"), native, f"* {where}.outputDimensionality"
        )
        return EmbedItem(text, max(1, count_tokens(text)), dimension)

    def answer(self, request: EmbedRequest, rid: str) -> HttpAnswer:
        vectors = request.vectors()
        if request.options.get("batch"):
            return HttpAnswer(200, {"embeddings": [{"values": v} for v in vectors]})
        return HttpAnswer(200, {"embedding": {"values": vectors[0]}})


# ------------------------------------------------------------------- Cohere


def _quantized(vector: Sequence[float], kind: str) -> list[int] | str | list[float]:
    """One vector in one of Cohere's ``embedding_types``."""
    if kind == "float":
        return list(vector)
    if kind == "base64":
        return float32_base64(vector)
    if kind in ("int8", "uint8"):
        scale = max((abs(v) for v in vector), default=0.0) or 1.0
        signed = [max(-128, min(127, round(v / scale * 127))) for v in vector]
        return signed if kind == "int8" else [s + 128 for s in signed]
    # binary / ubinary: one bit per dimension (1 when positive), 8 to a byte.
    packed: list[int] = []
    for start in range(0, len(vector), 8):
        byte = 0
        for v in vector[start : start + 8]:
            byte = (byte << 1) | (v > 0)
        packed.append(byte)
    return packed if kind == "ubinary" else [b - 128 for b in packed]


class CohereEmbedWire(EmbedWire):
    """``POST /v2/embed`` and ``/v1/embed``: at most 96 texts per call.

    ``input_type`` is required for v3 and newer models; ``output_dimension`` (v2
    only) for ``embed-v4.0`` and its sizes 256/512/1024/1536 only. v1 without
    ``embedding_types`` answers ``embeddings_floats``; otherwise
    ``embeddings_by_type``.
    """

    def parse(self, body: Mapping[str, Any], path_model: str, method: str) -> EmbedRequest:
        model = body.get("model")
        if method == "v2" and (not isinstance(model, str) or not model):
            msg = "invalid request: model must be specified"
            raise BadRequest(msg)
        model = str(model or "embed-english-v2.0")  # v1's default model
        texts = self._texts(body)
        if len(texts) > COHERE_MAX_TEXTS:
            msg = (
                f"invalid request: total number of texts must be at most {COHERE_MAX_TEXTS} "
                f"- received {len(texts)}"
            )
            raise BadRequest(msg)
        if not body.get("input_type") and ("v3" in model or "v4" in model):
            msg = "invalid request: valid input_type must be provided with the provided model"
            raise BadRequest(msg)
        raw_types = body.get("embedding_types")
        types = list(raw_types) if isinstance(raw_types, list) and raw_types else ["float"]
        allowed = COHERE_TYPES if method == "v2" else COHERE_TYPES[:-1]
        for kind in types:
            if kind not in allowed:
                msg = f"invalid request: embedding_types must be one of {list(allowed)}"
                raise BadRequest(msg)
        native = default_dimension("cohere", model)
        dimension = native
        wanted = body.get("output_dimension") if method == "v2" else None
        if wanted is not None:
            if not model.startswith("embed-v4"):
                msg = f"invalid request: output_dimension is not supported for model '{model}'"
                raise BadRequest(msg)
            if wanted not in COHERE_V4_DIMENSIONS:
                sizes = ", ".join(map(str, COHERE_V4_DIMENSIONS))
                msg = f"invalid request: output_dimension must be one of {sizes}"
                raise BadRequest(msg)
            dimension = int(wanted)
        items = tuple(EmbedItem(t, max(1, count_tokens(t)), dimension) for t in texts)
        by_type = method == "v2" or (isinstance(raw_types, list) and bool(raw_types))
        options = {"types": types, "by_type": by_type, "version": method[1:], "texts": texts}
        return EmbedRequest(model, items, options)

    def _texts(self, body: Mapping[str, Any]) -> list[str]:
        texts = body.get("texts")
        if isinstance(texts, list) and texts:
            if not all(isinstance(t, str) for t in texts):
                msg = "invalid request: texts must be strings"
                raise BadRequest(msg)
            return list(texts)
        inputs = body.get("inputs")  # v2's multimodal form: text parts only here
        if isinstance(inputs, list) and inputs:
            return [text_of(i.get("content") if isinstance(i, Mapping) else i) for i in inputs]
        if body.get("images"):
            msg = "invalid request: the simulator embeds texts only"
            raise BadRequest(msg)
        msg = "invalid request: one of texts, images or inputs must be specified"
        raise BadRequest(msg)

    def answer(self, request: EmbedRequest, rid: str) -> HttpAnswer:
        vectors = request.vectors()
        options = request.options
        embeddings: Any
        if options["by_type"]:
            embeddings = {kind: [_quantized(v, kind) for v in vectors] for kind in options["types"]}
            response_type = "embeddings_by_type"
        else:
            embeddings, response_type = vectors, "embeddings_floats"
        body = {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, rid)),
            "embeddings": embeddings,
            "texts": options["texts"],
            "meta": {
                "api_version": {"version": options["version"]},
                "billed_units": {"input_tokens": request.input_tokens},
            },
            "response_type": response_type,
        }
        return HttpAnswer(200, body)
