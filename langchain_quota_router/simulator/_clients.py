"""Build the real LangChain vendor chat and embedding models, pointed at a simulator."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._types import VENDORS

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from ._server import Simulator


def vendor_model(sim: Simulator, vendor: str, key: str, model: str, **kwargs: Any) -> BaseChatModel:
    """Build the real LangChain chat model of ``vendor`` talking to ``sim``.

    Each SDK's own retries are off, so one call is one HTTP request and a 429
    reaches the caller at once:

    - ``openai``: ``ChatOpenAI(base_url=sim.openai_base_url, max_retries=0,
      stream_usage=True, include_response_headers=True, use_responses_api=False)``.
    - ``groq``: ``ChatGroq(base_url=sim.groq_base_url, max_retries=0)``.
    - ``gemini``: ``ChatGoogleGenerativeAI(base_url=sim.gemini_base_url,
      max_retries=1, vertexai=False)``; in langchain-google-genai ``max_retries``
      is the number of *attempts* (0 would mean the SDK default of 5).
    - ``cohere``: a ``ChatCohere`` subclass whose calls default to
      ``request_options={"max_retries": 0}``; the Cohere SDK has no client-wide
      retry setting and retries 429/5xx twice otherwise.

    Args:
        sim: a started simulator.
        vendor: ``"openai"``, ``"groq"``, ``"gemini"`` or ``"cohere"``.
        key: the API key to send.
        model: the model name to ask for.
        **kwargs: more constructor arguments for the vendor class (they win over
            the defaults above, e.g. ``timeout=0.2``).

    Returns:
        The vendor's chat model.

    Raises:
        ValueError: ``vendor`` is not one of the four.
    """
    # Imported here: each vendor package is an optional extra.
    if vendor == "openai":
        from langchain_openai import ChatOpenAI

        options: dict[str, Any] = {
            "base_url": sim.openai_base_url,
            "max_retries": 0,
            "stream_usage": True,
            "include_response_headers": True,
            "use_responses_api": False,
        }
        return ChatOpenAI(model=model, api_key=key, **{**options, **kwargs})
    if vendor == "groq":
        from langchain_groq import ChatGroq

        options = {"base_url": sim.groq_base_url, "max_retries": 0}
        return ChatGroq(model=model, api_key=key, **{**options, **kwargs})
    if vendor == "gemini":
        from langchain_google_genai import ChatGoogleGenerativeAI

        options = {"base_url": sim.gemini_base_url, "max_retries": 1, "vertexai": False}
        return ChatGoogleGenerativeAI(model=model, google_api_key=key, **{**options, **kwargs})
    if vendor == "cohere":
        options = {"base_url": sim.cohere_base_url}
        return _no_retry_cohere()(model=model, cohere_api_key=key, **{**options, **kwargs})
    msg = f"vendor must be one of {VENDORS}, got {vendor!r}"
    raise ValueError(msg)


@functools.cache
def _no_retry_cohere() -> type[BaseChatModel]:
    """Return (once) a ChatCohere whose SDK calls default to no retries."""
    from langchain_cohere import ChatCohere

    class ChatCohereNoRetry(ChatCohere):
        """``ChatCohere`` that sends ``request_options={"max_retries": 0}``."""

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("request_options", {"max_retries": 0})
            return super()._generate(*args, **kwargs)

        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("request_options", {"max_retries": 0})
            return await super()._agenerate(*args, **kwargs)

        def _stream(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("request_options", {"max_retries": 0})
            return super()._stream(*args, **kwargs)

        def _astream(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("request_options", {"max_retries": 0})
            return super()._astream(*args, **kwargs)

    return ChatCohereNoRetry


EMBED_VENDORS = ("openai", "gemini", "cohere")


def vendor_embeddings(
    sim: Simulator, vendor: str, key: str, model: str, **kwargs: Any
) -> Embeddings:
    """Build the real LangChain embeddings class of ``vendor`` talking to ``sim``.

    Retries are off, so one batch is one HTTP request and a 429 reaches the caller
    at once:

    - ``openai``: ``OpenAIEmbeddings(base_url=sim.openai_base_url, max_retries=0,
      check_embedding_ctx_length=False)``. With the default
      ``check_embedding_ctx_length=True`` it sends token ids from tiktoken's
      ``cl100k_base``, which tiktoken downloads unless it is in its cache.
    - ``gemini``: ``GoogleGenerativeAIEmbeddings(base_url=sim.gemini_base_url,
      vertexai=False)``; its google-genai client is built without
      ``retry_options``, which means a single attempt (its ``request_options``
      field is not used for calls).
    - ``cohere``: a ``CohereEmbeddings`` subclass with ``max_retries=1`` (LangChain's
      tenacity loop: ``max_retries`` is the number of attempts, and it retries every
      exception, 4-10 s apart) whose SDK calls send ``request_options=
      {"max_retries": 0}`` (the Cohere SDK retries 429/5xx twice otherwise).

    Args:
        sim: a started simulator.
        vendor: ``"openai"``, ``"gemini"`` or ``"cohere"`` (Groq has no embeddings).
        key: the API key to send.
        model: the embedding model to ask for.
        **kwargs: more constructor arguments (they win over the defaults above).

    Returns:
        The vendor's embeddings object.

    Raises:
        ValueError: ``vendor`` is not one of the three.
    """
    if vendor == "openai":
        from langchain_openai import OpenAIEmbeddings

        options: dict[str, Any] = {
            "api_key": key,  # an alias of openai_api_key
            "base_url": sim.openai_base_url,
            "max_retries": 0,
            "check_embedding_ctx_length": False,
        }
        return OpenAIEmbeddings(model=model, **{**options, **kwargs})
    if vendor == "gemini":
        from langchain_google_genai import GoogleGenerativeAIEmbeddings

        options = {"base_url": sim.gemini_base_url, "vertexai": False}
        return GoogleGenerativeAIEmbeddings(
            model=model, google_api_key=key, **{**options, **kwargs}
        )
    if vendor == "cohere":
        options = {"base_url": sim.cohere_base_url, "max_retries": 1}
        return _no_retry_cohere_embeddings()(
            model=model, cohere_api_key=key, **{**options, **kwargs}
        )
    msg = f"vendor must be one of {EMBED_VENDORS}, got {vendor!r}"
    raise ValueError(msg)


@functools.cache
def _no_retry_cohere_embeddings() -> Callable[..., Embeddings]:
    """Return (once) a CohereEmbeddings whose SDK calls default to no retries."""
    from langchain_cohere import CohereEmbeddings

    class CohereEmbeddingsNoRetry(CohereEmbeddings):
        """``CohereEmbeddings`` that sends ``request_options={"max_retries": 0}``."""

        def embed_with_retry(self, **kwargs: Any) -> Any:
            kwargs.setdefault("request_options", {"max_retries": 0})
            return super().embed_with_retry(**kwargs)

        def aembed_with_retry(self, **kwargs: Any) -> Any:
            kwargs.setdefault("request_options", {"max_retries": 0})
            return super().aembed_with_retry(**kwargs)

    return CohereEmbeddingsNoRetry
