"""Embedders: one object per family of LangChain embedding classes, found by one name.

The embeddings twin of :mod:`langchain_quota_router.vendors.kinds`. An *embedder* is
what the router knows about one LangChain embeddings class:

- **building** it from the catalog (``Route("cohere:embed-v4.0")``), its retries off;
- **preparing** an object the user built: the router calls a copy whose SDK and
  LangChain retries are off and which never splits a batch itself (the LangChain
  classes batch internally and retry on their own: Cohere's tenacity loop and SDK,
  OpenAI's SDK; hidden retries spend quota the ledger never sees);
- **one call**: :meth:`Embedder.embed` sends exactly the texts it is given, in one
  request where the class allows it;
- **describing** it: the provider, the model and the dimension asked for.

Keyed by the chat kind's name (``openai``, ``google``, ``cohere``) so a catalog
vendor's ``kind`` finds both; :func:`embedder_for` finds the embedder of an object by
its class name, so no vendor package is imported unless the user has it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from langchain_core.embeddings import Embeddings

from langchain_quota_router._errors import ConfigurationError

__all__ = ["EMBEDDERS", "Embedder", "InputType", "embedder_for"]

#: What a text is embedded as: a search query, or a document to be searched.
InputType = Literal["query", "document"]


class Embedder:
    """A family of LangChain embeddings classes; this base knows nothing of its class.

    Attributes:
        name: the chat kind's name it pairs with (``"generic"`` for an unknown class).
        package: the Python package of the class (imported lazily).
        class_name: the class the catalog builds.
        class_names: class names that mean this embedder in an object's MRO.
        extra: the ``pip install 'langchain-quota-router[extra]'`` that brings it.
        provider: the provider name reports use.
        dimension_field: the constructor field asking for a smaller vector, if any.
    """

    name: str = "generic"
    package: str | None = None
    class_name: str | None = None
    class_names: tuple[str, ...] = ()
    extra: str = ""
    provider: str | None = None
    dimension_field: str | None = None

    def __repr__(self) -> str:
        return f"<embedder {self.name!r}>"

    # ------------------------------------------------------------------ building

    def build(
        self,
        model: str,
        api_key: str | None,
        *,
        vendor: str,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> Embeddings:
        """Build the vendor's embeddings class for ``model``, retries off."""
        if self.package is None or self.class_name is None:
            msg = f"vendor {vendor!r}: no embeddings class is known for it"
            raise ConfigurationError(msg)
        try:
            module = importlib.import_module(self.package)
        except ImportError as exc:
            msg = (
                f"vendor {vendor!r} needs the {self.package.replace('_', '-')} package: "
                f"pip install 'langchain-quota-router[{self.extra}]'"
            )
            raise ConfigurationError(msg) from exc
        cls = getattr(module, self.class_name)
        options: dict[str, Any] = {"model": model, **self.constructor_kwargs(api_key)}
        if base_url is not None:
            options["base_url"] = base_url
        built: Embeddings = cls(**{**options, **kwargs})
        return built

    def constructor_kwargs(self, api_key: str | None) -> dict[str, Any]:
        """The constructor arguments that pass the key and turn retries off."""
        return {}

    def prepare(self, model: Embeddings) -> Embeddings:
        """The object the router calls: the user's, or a copy with retries off."""
        return model

    # ------------------------------------------------------------------ describing

    def describe(self, model: Embeddings) -> tuple[str, str, int | None]:
        """``(provider, model name, dimension asked for or None)``."""
        provider = self.provider or type(model).__name__.lower()
        name = None
        for attr in ("model", "model_name", "model_id"):
            value = getattr(model, attr, None)
            if isinstance(value, str) and value:
                name = value.removeprefix("models/")
                break
        dimension = getattr(model, self.dimension_field, None) if self.dimension_field else None
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension <= 0:
            dimension = None
        return provider, name or type(model).__name__, dimension

    # ------------------------------------------------------------------ calling

    def embed(self, model: Embeddings, texts: list[str], kind: InputType) -> list[list[float]]:
        """Embed ``texts`` in one vendor call (a query is always one text)."""
        if kind == "query":
            return [model.embed_query(text) for text in texts]
        return model.embed_documents(texts, **self.batch_kwargs(texts))

    async def aembed(
        self, model: Embeddings, texts: list[str], kind: InputType
    ) -> list[list[float]]:
        """:meth:`embed` for async code."""
        if kind == "query":
            return [await model.aembed_query(text) for text in texts]
        return await model.aembed_documents(texts, **self.batch_kwargs(texts))

    def batch_kwargs(self, texts: list[str]) -> dict[str, Any]:
        """Arguments making the class send ``texts`` as one batch."""
        return {}


# ---------------------------------------------------------------------- OpenAI


class OpenAIEmbedder(Embedder):
    """``OpenAIEmbeddings``: SDK retries off, text sent as text, one chunk per call.

    With ``check_embedding_ctx_length=True`` (its default) the class sends tiktoken
    token ids and splits long texts into several inputs, so one text is no longer one
    input: the router's copy sends text (a text over the model's 8,191 tokens is
    then the vendor's 400, as for any other client).
    """

    name = "openai"
    package = "langchain_openai"
    class_name = "OpenAIEmbeddings"
    class_names = ("OpenAIEmbeddings",)
    extra = "openai"
    provider = "openai"
    dimension_field = "dimensions"

    def constructor_kwargs(self, api_key: str | None) -> dict[str, Any]:
        return {"api_key": api_key, "max_retries": 0, "check_embedding_ctx_length": False}

    def prepare(self, model: Embeddings) -> Embeddings:
        copy: Any = model.model_copy() if hasattr(model, "model_copy") else model
        for field in ("client", "async_client"):
            resource = getattr(model, field, None)
            root = getattr(resource, "_client", None)
            if root is not None and hasattr(root, "with_options"):
                setattr(copy, field, root.with_options(max_retries=0).embeddings)
        if hasattr(copy, "max_retries"):
            copy.max_retries = 0
        if hasattr(copy, "check_embedding_ctx_length"):
            copy.check_embedding_ctx_length = False
        result: Embeddings = copy
        return result

    def batch_kwargs(self, texts: list[str]) -> dict[str, Any]:
        return {"chunk_size": max(1, len(texts))}


# ---------------------------------------------------------------------- Google


class GoogleEmbedder(Embedder):
    """``GoogleGenerativeAIEmbeddings``: its client makes one attempt; one batch per call."""

    name = "google"
    package = "langchain_google_genai"
    class_name = "GoogleGenerativeAIEmbeddings"
    class_names = ("GoogleGenerativeAIEmbeddings",)
    extra = "google"
    provider = "google_genai"
    dimension_field = "output_dimensionality"

    def constructor_kwargs(self, api_key: str | None) -> dict[str, Any]:
        return {"google_api_key": api_key, "vertexai": False}

    def batch_kwargs(self, texts: list[str]) -> dict[str, Any]:
        return {"batch_size": max(1, len(texts))}


# ---------------------------------------------------------------------- Cohere


class _NoRetryCohereClient:
    """A Cohere SDK client whose ``embed`` neither retries nor splits the batch."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def embed(self, **kwargs: Any) -> Any:
        kwargs.setdefault("request_options", {"max_retries": 0})
        kwargs.setdefault("batching", False)
        return self._client.embed(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class CohereEmbedder(Embedder):
    """``CohereEmbeddings``: one tenacity attempt, SDK retries and batching off.

    ``max_retries`` there counts tenacity attempts (4-10 s apart, on any error), and
    the SDK behind it retries a 429 twice and splits texts into batches of 96 on its
    own threads.
    """

    name = "cohere"
    package = "langchain_cohere"
    class_name = "CohereEmbeddings"
    class_names = ("CohereEmbeddings",)
    extra = "cohere"
    provider = "cohere"

    def constructor_kwargs(self, api_key: str | None) -> dict[str, Any]:
        return {"cohere_api_key": api_key, "max_retries": 1}

    def prepare(self, model: Embeddings) -> Embeddings:
        copy: Any = model.model_copy() if hasattr(model, "model_copy") else model
        for field in ("client", "async_client"):
            client = getattr(model, field, None)
            if client is not None and not isinstance(client, _NoRetryCohereClient):
                setattr(copy, field, _NoRetryCohereClient(client))
        if hasattr(copy, "max_retries"):
            copy.max_retries = 1
        result: Embeddings = copy
        return result


# ---------------------------------------------------------------------- lookup

#: Every embedder by the name of the chat kind it pairs with.
EMBEDDERS: Mapping[str, Embedder] = MappingProxyType(
    {e.name: e for e in (OpenAIEmbedder(), GoogleEmbedder(), CohereEmbedder())}
)
_GENERIC = Embedder()
_BY_CLASS_NAME: Mapping[str, Embedder] = MappingProxyType(
    {class_name: e for e in EMBEDDERS.values() for class_name in e.class_names}
)


def embedder_for(model: Embeddings) -> Embedder:
    """The embedder of an object: by its class, or the first known class it derives
    from; an unknown class gets the generic one, which calls it as it is."""
    for cls in type(model).__mro__:
        found = _BY_CLASS_NAME.get(cls.__name__)
        if found is not None:
            return found
    return _GENERIC
