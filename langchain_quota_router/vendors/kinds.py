"""Vendor kinds: one object per family of LangChain chat classes, found by one name.

A *kind* is everything the router knows about one LangChain vendor class, in one place:

- **building** it from the catalog (``kind = "groq"`` in ``catalog.toml``): which
  package and class, the constructor arguments, and its SDK's retries off (the OpenAI
  and Groq SDKs retry a 429 twice, langchain-google-genai up to six times, Cohere's
  SDK twice; a router behind hidden retries is blind and slow);
- **preparing** a model the user built (``Route(ChatGroq(...))``): the router works on
  a copy whose SDK never retries, and for OpenAI-style clients the copy captures the
  ``x-ratelimit-*`` response headers without changing what the class returns;
- **tools**: each vendor's ``bind_tools`` takes tools its own way (Cohere refuses
  OpenAI-format dicts and knows only REQUIRED/NONE as a tool choice);
- **messages**: a conversation may move from one vendor to another mid-way; content
  one vendor produced (Gemini's list of blocks) is made acceptable to the next;
- **headers**: which rate-limit header family the class's vendor speaks.

The kinds are ``groq`` (``ChatGroq``), ``openai`` (``ChatOpenAI`` and every
OpenAI-compatible endpoint: OpenRouter, Mistral, Cerebras, ...), ``google``
(``ChatGoogleGenerativeAI``) and ``cohere`` (``ChatCohere``). :data:`KINDS` maps the
name to the kind; :func:`kind_for` finds the kind of a model object by its class (by
class *name*, so no vendor package is imported unless the user has it).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from langchain_quota_router._errors import ConfigurationError

__all__ = [
    "HEADER_FAMILIES",
    "KINDS",
    "CohereKind",
    "GoogleKind",
    "GroqKind",
    "HeaderFamily",
    "OpenAIKind",
    "VendorKind",
    "kind_for",
    "take_captured_headers",
]

#: The rate-limit headers a vendor sends:
#:
#: - ``x-ratelimit``: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (OpenAI,
#:   Groq; Groq's requests count per day, its tokens per minute);
#: - ``x-ratelimit-windowed``: the same with the window in the name,
#:   ``x-ratelimit-limit-tokens-minute``, ``-requests-day`` (Cerebras, SambaNova,
#:   Mistral);
#: - ``openrouter``: ``X-RateLimit-{Limit,Remaining,Reset}``, the reset in epoch ms;
#: - ``none``: no limit headers (Gemini says it all in its 429 body).
HeaderFamily = Literal["x-ratelimit", "x-ratelimit-windowed", "openrouter", "none"]
HEADER_FAMILIES: tuple[HeaderFamily, ...] = (
    "x-ratelimit",
    "x-ratelimit-windowed",
    "openrouter",
    "none",
)

_last_headers: ContextVar[Mapping[str, str] | None] = ContextVar(
    "quota_router_vendor_headers", default=None
)


def take_captured_headers() -> Mapping[str, str] | None:
    """The rate-limit headers of the last vendor answer in this context, once."""
    headers = _last_headers.get()
    if headers is not None:
        _last_headers.set(None)
    return headers


class VendorKind:
    """A family of LangChain chat classes; this base is the chat model we know nothing of.

    Attributes:
        name: the kind's name, as ``kind = "..."`` in the catalog; ``"generic"`` for
            a class the router has no special knowledge of.
        package: the Python package of the LangChain class (imported lazily).
        class_name: the class the catalog builds.
        class_names: class names that mean this kind when found in a model's MRO
            (a subclass of ``ChatOpenAI`` is still an OpenAI-style model).
        extra: the ``pip install 'langchain-quota-router[extra]'`` that brings it.
        headers: the rate-limit header family its vendor speaks by default (a catalog
            vendor may name another: OpenRouter speaks its own through ``ChatOpenAI``).
        provider: the provider name LangChain's tracing reports for the class.
    """

    name: str = "generic"
    package: str | None = None
    class_name: str | None = None
    class_names: tuple[str, ...] = ()
    extra: str = ""
    headers: HeaderFamily = "none"
    provider: str | None = None

    def __repr__(self) -> str:
        return f"<vendor kind {self.name!r}>"

    # ------------------------------------------------------------------ building

    def chat_class(self, vendor: str) -> type[BaseChatModel]:
        """Import the LangChain class, or say which extra to install.

        Args:
            vendor: the catalog vendor asking, for the error message.

        Raises:
            ConfigurationError: the kind builds nothing, or its package is missing.
        """
        if self.package is None or self.class_name is None:
            msg = f"vendor {vendor!r}: kind {self.name!r} cannot build a chat model"
            raise ConfigurationError(msg)
        try:
            module = importlib.import_module(self.package)
        except ImportError as exc:
            msg = (
                f"vendor {vendor!r} needs the {self.package.replace('_', '-')} package: "
                f"pip install 'langchain-quota-router[{self.extra}]'"
            )
            raise ConfigurationError(msg) from exc
        cls: type[BaseChatModel] = getattr(module, self.class_name)
        return cls

    def constructor_kwargs(self, api_key: str | None, *, vendor: str) -> dict[str, Any]:
        """The constructor arguments that pass the key and turn SDK retries off."""
        return {}

    def build(
        self,
        model: str,
        api_key: str | None,
        *,
        vendor: str,
        base_url: str | None = None,
        **kwargs: Any,
    ) -> BaseChatModel:
        """Build the vendor's chat model with its SDK retries off.

        Args:
            model: the model name the vendor's API takes.
            api_key: the key (``None`` where the vendor needs none).
            vendor: the catalog vendor's name.
            base_url: the API's address; ``None`` keeps the class's default.
            **kwargs: more constructor arguments; they win over the defaults.
        """
        cls = self.chat_class(vendor)
        options: dict[str, Any] = {
            "model": model,
            **self.constructor_kwargs(api_key, vendor=vendor),
        }
        if base_url is not None:
            options["base_url"] = base_url
        return cls(**{**options, **kwargs})

    # ------------------------------------------------------------------ calling

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
        self, model: BaseChatModel, tools: Sequence[Any], tool_choice: Any, **options: Any
    ) -> dict[str, Any]:
        """The call kwargs that bind ``tools`` the way this vendor takes them.

        ``options`` (``strict``, ``parallel_tool_calls``, ...) go through the vendor
        model's own ``bind_tools``, which knows how its API spells them; a vendor that
        does not take one raises ``TypeError`` naming it.
        """
        if tool_choice is not None:
            options["tool_choice"] = tool_choice
        bound = model.bind_tools(tools, **options)
        kwargs = getattr(bound, "kwargs", None)
        if not isinstance(kwargs, dict):
            msg = f"{type(model).__name__}.bind_tools returned no call kwargs"
            raise TypeError(msg)
        return kwargs

    def messages(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        """The conversation in a shape this vendor accepts."""
        return messages

    def json_mode(self) -> dict[str, Any]:
        """Call kwargs asking this vendor for a JSON object as the answer."""
        return {"response_format": {"type": "json_object"}}


# ---------------------------------------------------------------------- OpenAI style


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


def _root_client(root: Any, completions: Any) -> Any:
    """The SDK client behind a ``chat.completions`` resource (OpenAI, Groq)."""
    if root is not None and hasattr(root, "with_options"):
        return root
    client = getattr(completions, "_client", None)
    return client if client is not None and hasattr(client, "with_options") else None


class _OpenAIStyleKind(VendorKind):
    """Classes over the OpenAI SDK or a copy of it: retries off on the client, headers."""

    headers: HeaderFamily = "x-ratelimit"

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


class GroqKind(_OpenAIStyleKind):
    """``ChatGroq``: the Groq SDK, a copy of OpenAI's, with the same headers."""

    name = "groq"
    package = "langchain_groq"
    class_name = "ChatGroq"
    class_names = ("ChatGroq",)
    extra = "groq"
    provider = "groq"

    def constructor_kwargs(self, api_key: str | None, *, vendor: str) -> dict[str, Any]:
        return {"api_key": api_key, "max_retries": 0}


class OpenAIKind(_OpenAIStyleKind):
    """``ChatOpenAI``, for OpenAI and every OpenAI-compatible endpoint (by base URL)."""

    name = "openai"
    package = "langchain_openai"
    class_name = "ChatOpenAI"
    class_names = ("BaseChatOpenAI",)
    extra = "openai"
    provider = "openai"

    def constructor_kwargs(self, api_key: str | None, *, vendor: str) -> dict[str, Any]:
        return {
            # Ollama ignores the key but the OpenAI SDK refuses to start without one.
            "api_key": api_key if api_key is not None else vendor,
            "max_retries": 0,
            # The router reads usage from streams and headers of chat completions.
            "stream_usage": True,
            "use_responses_api": False,
        }


# ---------------------------------------------------------------------- Google


class GoogleKind(VendorKind):
    """``ChatGoogleGenerativeAI``: ``max_retries`` there counts attempts; one is none."""

    name = "google"
    package = "langchain_google_genai"
    class_name = "ChatGoogleGenerativeAI"
    class_names = ("ChatGoogleGenerativeAI",)
    extra = "google"
    provider = "google_genai"

    def constructor_kwargs(self, api_key: str | None, *, vendor: str) -> dict[str, Any]:
        return {"google_api_key": api_key, "max_retries": 1, "vertexai": False}

    def call_kwargs(self) -> dict[str, Any]:
        return {"max_retries": 1}

    def json_mode(self) -> dict[str, Any]:
        return {"response_mime_type": "application/json"}

    def generation_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Gemini's request config rejects max_tokens; its name is max_output_tokens.
        if "max_tokens" in kwargs:
            kwargs = dict(kwargs)
            kwargs.setdefault("max_output_tokens", kwargs.pop("max_tokens"))
        return kwargs


# ---------------------------------------------------------------------- Cohere


class CohereKind(VendorKind):
    """``ChatCohere``: no SDK retries, JSON-schema tools, REQUIRED/NONE tool choice."""

    name = "cohere"
    package = "langchain_cohere"
    class_name = "ChatCohere"
    class_names = ("ChatCohere",)
    extra = "cohere"
    provider = "cohere"

    def constructor_kwargs(self, api_key: str | None, *, vendor: str) -> dict[str, Any]:
        # ChatCohere has no client-wide retry setting: call_kwargs sends
        # request_options={"max_retries": 0} with every call instead.
        return {"cohere_api_key": api_key}

    def call_kwargs(self) -> dict[str, Any]:
        return {"request_options": {"max_retries": 0}}

    def bind_tools(
        self, model: BaseChatModel, tools: Sequence[Any], tool_choice: Any, **options: Any
    ) -> dict[str, Any]:
        named = _named_tool(tool_choice)
        if named is not None:
            # Cohere can only insist on *a* call: offer only the named tool, so the
            # call it insists on is the one the caller asked for.
            tools = [t for t in tools if _tool_name(t) == named] or list(tools)
        kwargs = super().bind_tools(model, [_cohere_tool(t) for t in tools], None, **options)
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


def _tool_name(tool: Any) -> str | None:
    try:
        return str(convert_to_openai_tool(tool)["function"]["name"])
    except Exception:  # noqa: BLE001 - an odd tool shape simply matches no name
        return None


def _named_tool(choice: Any) -> str | None:
    """The tool a ``tool_choice`` names, in any of LangChain's spellings."""
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        return name if isinstance(name, str) else None
    if isinstance(choice, str) and choice not in ("auto", "any", "required", "none"):
        return choice
    return None


def _cohere_tool_choice(choice: Any) -> str | None:
    if choice in (None, "auto", False):
        return None
    if choice == "none":
        return "NONE"
    # "any", "required", True or a tool's name: Cohere can only insist on a call.
    return "REQUIRED"


# ---------------------------------------------------------------------- lookup

#: Every kind by its name: the one key the catalog (``kind = "groq"``) and
#: :func:`kind_for` both use.
KINDS: Mapping[str, VendorKind] = MappingProxyType(
    {kind.name: kind for kind in (GroqKind(), OpenAIKind(), GoogleKind(), CohereKind())}
)
_GENERIC = VendorKind()
_BY_CLASS_NAME: Mapping[str, VendorKind] = MappingProxyType(
    {class_name: kind for kind in KINDS.values() for class_name in kind.class_names}
)


def kind_for(model: BaseChatModel) -> VendorKind:
    """The kind of a model object: by its class, or the first known class it derives from.

    A class the router knows nothing of gets the generic kind, which calls the model as
    it is.
    """
    for cls in type(model).__mro__:
        kind = _BY_CLASS_NAME.get(cls.__name__)
        if kind is not None:
            return kind
    return _GENERIC
