"""Agent middleware over the router reacts to its errors as to a single model's."""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import SummarizationMiddleware
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatResult
from pydantic import PrivateAttr

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.testing import FakeVendorChatModel


class Summariser(FakeVendorChatModel):
    """Answers every prompt with a summary; remembers how long each prompt was."""

    _sizes: list[int] = PrivateAttr(default_factory=list)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._sizes.append(count_tokens_approximately(messages))
        return super()._generate(messages, stop, run_manager, **kwargs)


def history() -> list[BaseMessage]:
    turns: list[BaseMessage] = []
    for i in range(12):
        turns.append(HumanMessage(f"Question {i}: " + "tell me more about rate limits " * 30))
        turns.append(AIMessage(f"Answer {i}: " + "a sliding window counts requests " * 30))
    turns.append(HumanMessage("So what should I do?"))
    return turns


def summarising_agent(clock: FakeClock, context_window: int | None) -> tuple[Any, Summariser]:
    summariser = Summariser(model="summariser", script=["A summary of the talk so far."])
    summary_router = QuotaRoutedChatModel(
        routes=[Route(summariser, name="summary", context_window=context_window)],
        ledger="memory://",
        cache=False,
        clock=clock,
    )
    main = FakeVendorChatModel(model="main", script=["Use a sliding window."])
    agent = create_agent(
        model=main,
        middleware=[
            SummarizationMiddleware(
                model=summary_router, trigger=("messages", 10), keep=("messages", 2)
            )
        ],
    )
    return agent, summariser


def test_summarization_middleware_recovers_from_a_prompt_too_long_for_every_route(
    clock: FakeClock,
) -> None:
    # How long the summary prompt is, when every route takes it.
    agent, summariser = summarising_agent(clock, None)
    agent.invoke({"messages": history()})
    (full,) = summariser._sizes

    # Now no route's context window takes it: the router raises ContextOverflowError,
    # and the middleware retries with the middle of the history cut out.
    agent, summariser = summarising_agent(clock, full * 3 // 4)
    result = agent.invoke({"messages": history()})

    assert result["messages"][-1].content == "Use a sliding window."
    assert len(summariser._sizes) == 1
    assert summariser._sizes[0] < full * 3 // 4
