"""What the router must know about each vendor class to route through it honestly.

An adapter is picked by the model's class (by name, so no vendor package is imported
unless the user has it):

- **retries off**: the OpenAI and Groq SDKs retry a 429 twice, langchain-google-genai
  up to six times, Cohere's SDK twice; a router behind hidden retries is blind and
  slow. The router works on a copy of the user's model whose SDK never retries.
- **rate-limit headers**: OpenAI and Groq send ``x-ratelimit-*`` headers on every
  answer. Their SDK clients are wrapped so those headers are captured without
  changing what the LangChain class returns.
- **tools**: each vendor's ``bind_tools`` takes tools its own way (Cohere refuses
  OpenAI-format dicts and knows only REQUIRED/NONE as a tool choice).
- **messages**: a conversation may move from one vendor to another mid-way; content
  one vendor produced (Gemini's list of blocks) is made acceptable to the next.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

_last_headers: ContextVar[Mapping[str, str] | None] = ContextVar(
    "quota_router_vendor_headers", default=None
)


def take_captured_headers() -> Mapping[str, str] | None:
    """The rate-limit headers of the last vendor answer in this context, once."""
    headers = _last_headers.get()
    if headers is not None:
        _last_headers.set(None)
    return headers


class VendorAdapter:
    """The default: a chat model the router knows nothing special about."""

    provider: str | None = None

    def prepare(self, model: BaseChatModel) -> BaseChatModel:
        """The model the router calls: the user's, or a copy with retries off."""
        return model

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every call to this vendor gets."""
        return {}

    def generation_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Call kwargs renamed to what this vendor's class calls them."""
        return kwargs

    def bind_tools(
        self, model: BaseChatModel, tools: Sequence[Any], tool_choice: Any
    ) -> dict[str, Any]:
        """The call kwargs that bind ``tools`` the way this vendor takes them."""
        bound = (
            model.bind_tools(tools)
            if tool_choice is None
            else model.bind_tools(tools, tool_choice=tool_choice)
        )
        kwargs = getattr(bound, "kwargs", None)
        if not isinstance(kwargs, dict):
            msg = f"{type(model).__name__}.bind_tools returned no call kwargs"
            raise TypeError(msg)
        return kwargs

    def messages(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        """The conversation in a shape this vendor accepts."""
        return messages


class _HeaderCapture:
    """An OpenAI-style ``chat.completions`` resource that remembers response headers."""

    def __init__(self, completions: Any) -> None:
        self._completions = completions

    def create(self, **kwargs: Any) -> Any:
        raw = self._completions.with_raw_response.create(**kwargs)
        _last_headers.set(dict(raw.headers))
        return raw.parse()

    @property
    def with_raw_response(self) -> Any:
        # ChatOpenAI's non-streaming path asks for the raw response itself.
        return _RawCapture(self._completions.with_raw_response)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._completions, name)


class _RawCapture:
    def __init__(self, raw_resource: Any) -> None:
        self._raw_resource = raw_resource

    def create(self, **kwargs: Any) -> Any:
        raw = self._raw_resource.create(**kwargs)
        _last_headers.set(dict(raw.headers))
        return raw


class _AsyncRawCapture(_RawCapture):
    async def create(self, **kwargs: Any) -> Any:
        raw = await self._raw_resource.create(**kwargs)
        _last_headers.set(dict(raw.headers))
        return raw


class _AsyncHeaderCapture(_HeaderCapture):
    @property
    def with_raw_response(self) -> Any:
        return _AsyncRawCapture(self._completions.with_raw_response)

    async def create(self, **kwargs: Any) -> Any:
        raw = await self._completions.with_raw_response.create(**kwargs)
        _last_headers.set(dict(raw.headers))
        # The SDKs' raw responses parse synchronously even on async clients (the
        # "legacy" response type); newer ones may not: accept both.
        parsed = raw.parse()
        return await parsed if inspect.isawaitable(parsed) else parsed


class OpenAIStyleAdapter(VendorAdapter):
    """ChatOpenAI (and every OpenAI-compatible endpoint) and ChatGroq."""

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def prepare(self, model: BaseChatModel) -> BaseChatModel:
        copy = model.model_copy()
        sync_root = _root_client(
            getattr(model, "root_client", None), getattr(model, "client", None)
        )
        async_root = _root_client(
            getattr(model, "root_async_client", None), getattr(model, "async_client", None)
        )
        if sync_root is not None:
            sync_root = sync_root.with_options(max_retries=0)
            if hasattr(copy, "root_client"):
                copy.root_client = sync_root
            copy.client = _HeaderCapture(sync_root.chat.completions)  # type: ignore[attr-defined]
        if async_root is not None:
            async_root = async_root.with_options(max_retries=0)
            if hasattr(copy, "root_async_client"):
                copy.root_async_client = async_root
            copy.async_client = _AsyncHeaderCapture(async_root.chat.completions)  # type: ignore[attr-defined]
        if hasattr(copy, "max_retries"):
            copy.max_retries = 0
        if hasattr(copy, "stream_usage"):
            # Without it, streamed OpenAI answers carry no usage to settle with.
            copy.stream_usage = True
        return copy


def _root_client(root: Any, completions: Any) -> Any:
    """The SDK client behind a ``chat.completions`` resource (OpenAI, Groq)."""
    if root is not None and hasattr(root, "with_options"):
        return root
    client = getattr(completions, "_client", None)
    return client if client is not None and hasattr(client, "with_options") else None


class GeminiAdapter(VendorAdapter):
    """ChatGoogleGenerativeAI: ``max_retries`` there counts attempts; one is none."""

    provider = "google_genai"

    def call_kwargs(self) -> dict[str, Any]:
        return {"max_retries": 1}

    def generation_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Gemini's request config rejects max_tokens; its name is max_output_tokens.
        if "max_tokens" in kwargs:
            kwargs = dict(kwargs)
            kwargs.setdefault("max_output_tokens", kwargs.pop("max_tokens"))
        return kwargs


class CohereAdapter(VendorAdapter):
    """ChatCohere: no SDK retries, JSON-schema tools, REQUIRED/NONE tool choice."""

    provider = "cohere"

    def call_kwargs(self) -> dict[str, Any]:
        return {"request_options": {"max_retries": 0}}

    def bind_tools(
        self, model: BaseChatModel, tools: Sequence[Any], tool_choice: Any
    ) -> dict[str, Any]:
        kwargs = super().bind_tools(model, [_cohere_tool(t) for t in tools], None)
        choice = _cohere_tool_choice(tool_choice)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return kwargs

    def messages(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        # Gemini and Anthropic answer with lists of content blocks; Cohere's message
        # validation takes only text for an assistant turn.
        return [
            m.model_copy(update={"content": m.text})
            if isinstance(m, AIMessage) and not isinstance(m.content, str)
            else m
            for m in messages
        ]


def _cohere_tool(tool: Any) -> Any:
    """A tool ChatCohere accepts: OpenAI-format dicts become JSON-schema dicts."""
    if not isinstance(tool, dict):
        return tool
    function = convert_to_openai_tool(tool)["function"]
    parameters = function.get("parameters") or {}
    return {
        "title": function["name"],
        "description": function.get("description") or function["name"],
        "properties": parameters.get("properties", {}),
        "required": parameters.get("required", []),
    }


def _cohere_tool_choice(choice: Any) -> str | None:
    if choice in (None, "auto", False):
        return None
    if choice == "none":
        return "NONE"
    # "any", "required", True or a tool's name: Cohere can only insist on a call.
    return "REQUIRED"


_BY_CLASS: dict[str, VendorAdapter] = {
    "ChatGroq": OpenAIStyleAdapter("groq"),
    "BaseChatOpenAI": OpenAIStyleAdapter("openai"),
    "ChatGoogleGenerativeAI": GeminiAdapter(),
    "ChatCohere": CohereAdapter(),
}
_DEFAULT = VendorAdapter()


def adapter_for(model: BaseChatModel) -> VendorAdapter:
    """The adapter for a model's class (or the first known class it derives from)."""
    for cls in type(model).__mro__:
        adapter = _BY_CLASS.get(cls.__name__)
        if adapter is not None:
            return adapter
    return _DEFAULT
