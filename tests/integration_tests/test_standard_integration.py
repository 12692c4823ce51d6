"""LangChain's standard integration tests for chat models, run against the router.

Every call goes over real HTTP to the local vendor simulator, through the real
vendor classes, so the suite runs offline and in seconds. Each class puts two routes
of different vendors behind the router:

- ``TestRouterStandardPrimary``: OpenAI first, Cohere behind it; OpenAI serves.
- ``TestRouterStandardFallback``: Groq first, on a key allowed no request at all, so
  every call is refused with Groq's 429 (or skipped once the router has learned the
  limit) and served by the Gemini route behind it.

After each test the simulator's counts are checked: only the serving key served,
so no standard test passes because the router quietly fell back from a route that
failed.

The simulator answers deterministically: a text derived from the prompt or, with
tools offered, a call to the first (or forced) tool with arguments built from its
schema. Where a standard test checks *values* a model derives from the prompt
(``magic_function(3)`` called with ``{"input": 3}``, a JSON object in JSON mode, a
customer named in Chinese), the serving key is scripted with the reply a real model
gives: what is tested is that the router carries that reply through.

Skipped, with the reason (for the README):

- ``test_image_inputs``, ``test_image_tool_message``, ``test_pdf_inputs``,
  ``test_pdf_tool_message``, ``test_audio_inputs``: the test downloads its image,
  PDF or audio file from the internet (GitHub, w3.org, wikimedia.org); this suite is
  offline.
- ``test_invoke_with_model_override`` and its ``ainvoke``/``stream``/``astream``
  twins: the router does not support a per-call ``model=``; the model is chosen by
  routing, one per route (``supports_model_override = False``).
- ``test_stream_time``: a VCR-cassette benchmark of a real vendor's HTTP traffic;
  there is nothing to record against a local simulator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_cohere import ChatCohere
from langchain_core.language_models import BaseChatModel
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_groq import ChatGroq
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.simulator import Reply, SimKey, Simulator, ToolCall

OPENAI_KEY = "sk-standard-openai"
COHERE_KEY = "standard-cohere"
GROQ_KEY = "gsk-standard-groq-refusing"
GEMINI_KEY = "standard-gemini"
KEYS = [
    SimKey(OPENAI_KEY, "openai"),
    SimKey(COHERE_KEY, "cohere"),
    SimKey(GROQ_KEY, "groq", rpm=0),  # every request is refused with a 429
    SimKey(GEMINI_KEY, "gemini"),
]

# The async tests share one event loop. The vendor models are built once per class
# (building their HTTP clients is most of a test's cost), and an async HTTP client
# made in one loop fails with "Event loop is closed" in the next (langchain-openai
# even shares one per base URL between instances). The mark reaches the sync tests
# too, which pytest-asyncio warns about: expected here.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings(
        "ignore:The test <Function .*is marked with '@pytest.mark.asyncio' but it is not "
        "an async function:pytest.PytestWarning"
    ),
]

_simulator: Simulator | None = None
_vendor_models: dict[str, list[BaseChatModel]] = {}


def simulator() -> Simulator:
    """The module's simulator, started on first use: ``chat_model_params`` is a
    property the suite reads inside tests, so it cannot take a fixture."""
    global _simulator
    if _simulator is None:
        _simulator = Simulator(KEYS).start()
    return _simulator


@pytest.fixture(scope="module", autouse=True)
def _stop_simulator() -> Iterator[None]:
    global _simulator
    yield
    _vendor_models.clear()
    if _simulator is not None:
        _simulator.stop()
        _simulator = None


def _customer(name: str, description: str) -> Reply:
    return Reply(
        tool_calls=[
            ToolCall("unicode_customer", {"customer_name": name, "description": description})
        ]
    )


_MAGIC_3 = Reply(tool_calls=[ToolCall("magic_function", {"input": 3})])
_JOKE = Reply(
    json.dumps(
        {"setup": "Why did the cat sit on the computer?", "punchline": "To watch the mouse."}
    )
)
# What a real model answers in the standard tests that check values it derives from
# the prompt, one reply per request the test makes; other tests get the simulator's
# own answers.
SCRIPTS: dict[str, list[Reply]] = {
    "test_tool_calling": [_MAGIC_3, _MAGIC_3],  # invoke, then stream
    "test_tool_calling_async": [_MAGIC_3, _MAGIC_3],
    "test_json_mode": [_JOKE] * 4,  # a pydantic class, then a dict schema; each twice
    "test_unicode_tool_call_integration": [
        _customer("你好啊集团", "A Chinese technology company"),
        _customer("こんにちは株式会社", "A Japanese company"),
    ],
}


class _SimulatedRoutesStandard(ChatModelIntegrationTests):
    """The wiring both classes share; each says its routes and the key that serves."""

    route_names: tuple[str, str]
    serving_key: str
    idle_route: str
    idle_key: str
    """The other route and its key: it must never serve."""

    def vendor_models(self, sim: Simulator) -> list[BaseChatModel]:
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _simulated_calls(self, request: pytest.FixtureRequest) -> Iterator[None]:
        sim = simulator()
        sim.reset()  # usage, counts and leftover scripts of the previous test
        sim.script(self.serving_key, SCRIPTS.get(request.node.originalname, []))
        yield
        idle = sim.stats(self.idle_key)
        assert idle.served == 0, (
            f"{request.node.name}: the {self.idle_route!r} route served {idle.served} "
            f"call(s); the router fell back to it from a route that failed ({idle})"
        )

    @property
    def chat_model_class(self) -> type[QuotaRoutedChatModel]:
        return QuotaRoutedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # A new router (its own ledger, nothing learned) for every test, over vendor
        # models built once per class.
        name = type(self).__name__
        if name not in _vendor_models:
            _vendor_models[name] = self.vendor_models(simulator())
        routes = [
            Route(model, name=route, priority=priority)
            for priority, (route, model) in enumerate(
                zip(self.route_names, _vendor_models[name], strict=True), start=1
            )
        ]
        return {"routes": routes, "ledger": "memory://", "cache": False}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_anthropic_inputs(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        # The model is chosen by routing, one per route: a per-call ``model=`` would
        # name one vendor's model to every route.
        return False


class TestRouterStandardPrimary(_SimulatedRoutesStandard):
    """OpenAI first, Cohere behind it: OpenAI serves every call."""

    route_names = ("openai", "cohere")
    serving_key = OPENAI_KEY
    idle_route = "cohere"
    idle_key = COHERE_KEY

    def vendor_models(self, sim: Simulator) -> list[BaseChatModel]:
        return [
            ChatOpenAI(model="gpt-4o-mini", api_key=OPENAI_KEY, base_url=sim.openai_base_url),
            ChatCohere(
                model="command-r-08-2024", cohere_api_key=COHERE_KEY, base_url=sim.cohere_base_url
            ),
        ]


class TestRouterStandardFallback(_SimulatedRoutesStandard):
    """Groq first on a key allowed no request at all, Gemini behind it: Groq refuses
    (429) and Gemini serves every call."""

    route_names = ("groq", "gemini")
    serving_key = GEMINI_KEY
    idle_route = "groq"
    idle_key = GROQ_KEY

    @pytest.fixture(autouse=True)
    def _groq_refused(self) -> Iterator[None]:
        yield
        groq = simulator().stats(GROQ_KEY)
        assert groq.refused == groq.received, groq

    def vendor_models(self, sim: Simulator) -> list[BaseChatModel]:
        return [
            ChatGroq(model="openai/gpt-oss-120b", api_key=GROQ_KEY, base_url=sim.groq_base_url),
            ChatGoogleGenerativeAI(
                model="gemini-2.5-flash", google_api_key=GEMINI_KEY, base_url=sim.gemini_base_url
            ),
        ]
