"""``quota-router demo``: one simulated day of free-tier quota over four vendors.

No keys and no network. The demo starts the project's vendor simulator on
127.0.0.1 with one key each for Groq, Gemini, Cohere and OpenAI, builds a
:class:`~langchain_quota_router.QuotaRoutedChatModel` over the *real* LangChain
vendor classes pointed at it, and runs a day's workload: questions (some asked
twice, so the cache answers), streamed answers, a tool-calling agent, a vendor
outage (a 500) and a rejected key (a 401).

How the day fits in seconds:

- **Limits.** Each key gets its vendor's documented free-tier limits, with every
  figure above 100 divided by 20 (``1000/day`` becomes ``50/day``; Gemini's
  ``20/day`` and the per-minute request caps stay as they are), so a day's quota is
  a few dozen calls. The router's routes and the simulator's keys get the *same*
  limits, so the router knows them.
- **Clock.** A ``FakeClock`` shared by the router, the ledger's windows, the cache
  and the simulator. The workload moves it forward between calls (08:00 to 22:00
  UTC), so a day passes in seconds and nothing sleeps.

Because the router knows every limit, it never sends a request a vendor would
refuse: the simulator's count of 429s stays at zero while the router's count of
"refusals avoided" (requests not sent because the ledger knew the pool was full)
grows as the free tiers fill up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, tool

from langchain_quota_router.cache.disk import DiskResponseCache
from langchain_quota_router.chat.model import QuotaRoutedChatModel
from langchain_quota_router.cli import _format as fmt
from langchain_quota_router.quota.clock import FakeClock
from langchain_quota_router.quota.ledger import Demand, LimitUsage, Refusal, Reservation
from langchain_quota_router.quota.ledger.sqlite import SQLiteLedger
from langchain_quota_router.quota.limits import Limit
from langchain_quota_router.quota.status import LimitRow, read_status, tightest
from langchain_quota_router.quota.watch import QuotaAlert
from langchain_quota_router.route import Route
from langchain_quota_router.simulator import Fault, SimKey, Simulator, vendor_model
from langchain_quota_router.simulator._types import Vendor
from langchain_quota_router.vendors.catalog import ModelInfo, VendorInfo, lookup

__all__ = ["DEMO_VENDORS", "DemoResult", "DemoVendor", "run_demo", "scale_limit", "sim_key"]

#: Limits above this many requests or tokens are scaled down; smaller ones are kept.
SMALL = 100
#: What larger limits are divided by.
SCALE = 20
#: 2026-01-15 08:00 UTC, which is midnight in California: Gemini's day and the UTC
#: day both run through the whole simulated working day without resetting.
DAY_START = dt.datetime(2026, 1, 15, 8, tzinfo=dt.timezone.utc).timestamp()


@dataclass(frozen=True)
class DemoVendor:
    """One vendor of the demo: its route and model, with the catalog's figures.

    Attributes:
        route: the route's name (also what the demo prints).
        vendor: the vendor, as the catalog and the simulator name it.
        model: the model asked for.
    """

    route: str
    vendor: Vendor
    model: str

    @property
    def entry(self) -> tuple[VendorInfo, ModelInfo]:
        """The vendor's and the model's entries in the built-in catalog."""
        # Read for its figures only: the demo's simulator serves every model, so a
        # catalog warning (gpt-4o-mini is retiring) would only be noise here.
        return lookup(f"{self.vendor}:{self.model}", warn=False)

    @property
    def free_tier(self) -> tuple[str, ...]:
        """The model's documented free-tier limits, unscaled."""
        return self.entry[1].limits

    @property
    def limits(self) -> tuple[Limit, ...]:
        """The demo's limits: the free tier, scaled with :func:`scale_limit`."""
        return tuple(scale_limit(Limit.parse(text)) for text in self.free_tier)

    @property
    def priority(self) -> int:
        """The catalog's place in line: free vendors first, paid ones last."""
        return self.entry[0].priority

    @property
    def prices(self) -> tuple[float, float] | None:
        """USD per million input and output tokens."""
        return self.entry[1].prices


# OpenAI has no free tier; the catalog carries its most conservative (trial) limits,
# and as the one paid vendor it goes last in line.
DEMO_VENDORS: tuple[DemoVendor, ...] = (
    DemoVendor("groq", "groq", "openai/gpt-oss-120b"),
    DemoVendor("gemini", "gemini", "gemini-3.5-flash"),
    DemoVendor("cohere", "cohere", "command-r-08-2024"),
    DemoVendor("openai", "openai", "gpt-4o-mini"),
)


def scale_limit(limit: Limit) -> Limit:
    """The demo's version of a limit: above :data:`SMALL`, divided by :data:`SCALE`."""
    if limit.amount <= SMALL:
        return limit
    return Limit(limit.amount // SCALE, limit.metric, limit.window)


def sim_key(key: str, vendor: DemoVendor) -> SimKey:
    """A simulator key enforcing the same limits the router is told.

    The simulator knows minute and calendar-day windows only: a monthly quota or a
    rolling 24 hours is enforced as a calendar day, which is the same thing within
    the demo's one day (it starts with nothing spent and ends before midnight).
    """
    values: dict[str, int] = {}
    for limit in vendor.limits:
        per_minute = limit.window.kind == "sliding" and limit.window.seconds == 60
        if limit.metric == "requests":
            values["rpm" if per_minute else "rpd"] = limit.units
        else:
            values["tpm" if per_minute else "tpd"] = limit.units
    return SimKey(key, vendor.vendor, **values)


@dataclass
class DemoResult:
    """The demo's numbers, for the summary and for tests.

    Attributes:
        requests: calls the workload made (questions, streams and agent turns).
        served: calls that got an answer.
        failed: calls that raised.
        calls_per_route: calls each route answered (cache hits not included).
        fallbacks: calls answered by a route other than the first in line.
        cache_hits: calls answered from the cache.
        errors: vendor failures the router absorbed by falling back.
        refusals_avoided: per route, requests not sent because the ledger knew the
            pool was full.
        holds_skipped: per route, requests not sent because the route was cooling
            down or its key disabled.
        vendor_429s: per route, 429s the simulator actually sent.
        vendor_requests: per route, requests that reached the simulator.
        faults_injected: outages and bad keys the demo injected.
        alerts: quota alerts the router raised for daily and longer limits.
        agent_runs: tool-calling agent tasks started.
        agent_finished: agent tasks that ended with an answer after using a tool.
        tool_calls: tool calls the agent made.
        tokens: input + output tokens the vendors reported.
        usage: every pool's limits at the end of the day.
        limits: the same as the status page and ``quota-router report`` show them.
        lifespan_tokens_per_day: the demand the lifespan estimate is for.
        lifespan: days each pool lasts at that demand, and ``"all"`` for the set.
        lifespan_back_at: the pools full at the end, and when each comes back.
        ended_at: the simulated moment the day ended (epoch seconds).
        simulated_hours: how much simulated time passed.
        wall_seconds: how long the demo took.
        stopped_early: the ``seconds`` budget ran out before the workload ended.
    """

    requests: int = 0
    served: int = 0
    failed: int = 0
    calls_per_route: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    cache_hits: int = 0
    errors: int = 0
    refusals_avoided: dict[str, int] = field(default_factory=dict)
    holds_skipped: dict[str, int] = field(default_factory=dict)
    vendor_429s: dict[str, int] = field(default_factory=dict)
    vendor_requests: dict[str, int] = field(default_factory=dict)
    faults_injected: int = 0
    alerts: int = 0
    agent_runs: int = 0
    agent_finished: int = 0
    tool_calls: int = 0
    tokens: int = 0
    usage: list[LimitUsage] = field(default_factory=list)
    limits: list[LimitRow] = field(default_factory=list)
    lifespan_tokens_per_day: int = 0
    lifespan: dict[str, float] = field(default_factory=dict)
    lifespan_back_at: dict[str, str | None] = field(default_factory=dict)
    ended_at: float = 0.0
    simulated_hours: float = 0.0
    wall_seconds: float = 0.0
    stopped_early: bool = False

    @property
    def vendors_used(self) -> set[str]:
        """Routes that answered at least one call."""
        return {name for name, calls in self.calls_per_route.items() if calls}


class _CountingLedger(SQLiteLedger):
    """The SQLite ledger, counting the reservations it refuses, per pool.

    A refusal that names a limit is a request the vendor would have refused with a
    429; one without (a block or a disabled key) is a route the router rested.
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.full: Counter[str] = Counter()
        self.held: Counter[str] = Counter()

    def reserve(
        self,
        pool: str,
        limits: Sequence[Limit],
        demand: Demand,
        now: float,
        *,
        key: str | None = None,
        model: str | None = None,
    ) -> Reservation | Refusal:
        result = super().reserve(pool, limits, demand, now, key=key, model=model)
        if isinstance(result, Refusal):
            (self.full if result.limit is not None else self.held)[pool] += 1
        return result


# ----------------------------------------------------------------- the workload

_TOPICS = (
    "a sliding window rate limit",
    "a token bucket",
    "HTTP status 429",
    "exponential backoff",
    "a calendar-day quota",
    "a one-time API credit",
    "a response cache",
    "an idempotency key",
    "a circuit breaker",
    "write-ahead logging",
    "a LangChain chat model",
    "a tool-calling agent",
    "streaming tokens",
    "a context window",
    "prompt caching",
    "a vector store",
    "retrieval-augmented generation",
    "structured output",
    "temperature in sampling",
    "a system prompt",
    "a model router",
    "a free tier",
    "usage metadata",
    "a retry-after header",
    "SQLite WAL mode",
    "Redis Lua scripts",
    "a fake clock in tests",
    "an API key alias",
    "cost per million tokens",
    "a fallback chain",
)


def _question(n: int) -> str:
    return f"In one sentence, what is {_TOPICS[n % len(_TOPICS)]}? (ticket {n})"


@tool
def get_weather(city: Literal["Oslo", "Lima", "Kyoto"]) -> str:
    """Return today's weather for a city."""
    return {"Oslo": "-3 C and snow", "Lima": "24 C and sunny", "Kyoto": "8 C and clear"}[city]


@tool
def convert_currency(amount: float, currency: Literal["EUR", "USD", "JPY"]) -> str:
    """Convert an amount of Norwegian kroner to another currency."""
    rate = {"EUR": 0.085, "USD": 0.092, "JPY": 14.1}[currency]
    return f"{amount * rate:.2f} {currency}"


_TOOLS: list[BaseTool] = [get_weather, convert_currency]


class _Day:
    """Runs the workload and tells its story as it goes."""

    def __init__(
        self,
        router: QuotaRoutedChatModel,
        sim: Simulator,
        clock: FakeClock,
        ledger: _CountingLedger,
        keys: dict[str, str],
        result: DemoResult,
        say: Callable[[str], None],
        deadline: float,
    ) -> None:
        self.router = router
        self.sim = sim
        self.clock = clock
        self.ledger = ledger
        self.keys = keys
        self.result = result
        self.say = say
        self.deadline = deadline
        self.serving: str | None = None
        self.asked: list[str] = []
        self.agent = _make_agent(router)

    # --------------------------------------------------------------- helpers

    def _time(self) -> str:
        return dt.datetime.fromtimestamp(self.clock.now(), dt.timezone.utc).strftime("%H:%M")

    def _out_of_time(self) -> bool:
        if time.monotonic() > self.deadline:
            self.result.stopped_early = True
        return self.result.stopped_early

    def at(self, hour: int, minute: int = 0) -> None:
        """Move the clock forward to this time of the simulated day (UTC)."""
        target = DAY_START + (hour - 8) * 3600 + minute * 60
        if target > self.clock.now():
            self.clock.set(target)

    def phase(self, title: str) -> None:
        """Announce a part of the day."""
        self.say(f"\n{self._time()}  {title}")

    def _served(self, message: BaseMessage) -> None:
        """Count an answer and tell why it came from another route than the last:
        from the router's own account of the call (``attempts``), never a guess."""
        self.result.served += 1
        meta = message.response_metadata
        if meta.get("cache_hit"):
            return
        route = meta.get("route")
        if not isinstance(route, str) or route == self.serving:
            return
        if self.serving is not None:
            self.say(f"{self._time()}  {self.serving} -> {route}: {_why(meta, route)}")
        self.serving = route

    def _call(self, make: Callable[[], BaseMessage]) -> BaseMessage | None:
        self.result.requests += 1
        try:
            message = make()
        except Exception as exc:  # noqa: BLE001 - the demo reports failures, never dies
            self.result.failed += 1
            self.say(f"{self._time()}  FAILED: {_one_line(exc)}")
            return None
        self._served(message)
        return message

    def _count_phase(self, before: dict[str, Any]) -> None:
        after = self.router.get_stats()
        calls = Counter(after["calls_per_route"]) - Counter(before["calls_per_route"])
        hits = after["cache_hits"] - before["cache_hits"]
        spread = ", ".join(f"{name} {n}" for name, n in sorted(calls.items(), key=_by_count))
        self.say(f"       answered by {spread or 'nobody'}; cache hits {hits}")

    # ----------------------------------------------------------- the parts

    def questions(self, count: int, every_minutes: float, *, repeat_every: int = 4) -> None:
        """Plain questions; every ``repeat_every``-th repeats an earlier one."""
        before = self.router.get_stats()
        for i in range(count):
            if self._out_of_time():
                return
            if self.asked and i % repeat_every == repeat_every - 1:
                prompt = self.asked[(i * 7) % len(self.asked)]
            else:
                prompt = _question(len(self.asked))
                self.asked.append(prompt)
            self._call(functools.partial(self.router.invoke, prompt))
            self.clock.advance(every_minutes * 60)
        self._count_phase(before)

    def burst(self, count: int) -> None:
        """Many questions within one minute: per-minute limits bite."""
        before = self.router.get_stats()
        for _ in range(count):
            if self._out_of_time():
                return
            prompt = _question(len(self.asked))
            self.asked.append(prompt)
            self._call(functools.partial(self.router.invoke, prompt))
            self.clock.advance(2)
        self._count_phase(before)

    def streams(self, count: int, every_minutes: float) -> None:
        """Streamed answers, the last one a repeat (the router caches streams too)."""
        before = self.router.get_stats()
        for i in range(count):
            if self._out_of_time():
                return
            if i == count - 1 and self.asked:
                prompt = self.asked[-1]
            else:
                prompt = _question(len(self.asked))
                self.asked.append(prompt)
            self._call(functools.partial(_streamed, self.router, prompt))
            self.clock.advance(every_minutes * 60)
        self._count_phase(before)

    def agent_tasks(self, tasks: Sequence[str], every_minutes: float) -> None:
        """Run the tool-calling agent; each task is a tool call and an answer."""
        before = self.router.get_stats()
        for task in tasks:
            if self._out_of_time():
                return
            self.result.agent_runs += 1
            try:
                messages = self.agent(task)
            except Exception as exc:  # noqa: BLE001 - the demo reports failures, never dies
                self.result.requests += 1
                self.result.failed += 1
                self.say(f"{self._time()}  agent FAILED: {_one_line(exc)}")
                continue
            answers = [m for m in messages if isinstance(m, AIMessage)]
            tools = [m for m in messages if isinstance(m, ToolMessage)]
            self.result.requests += len(answers)
            for answer in answers:
                self._served(answer)
            self.result.tool_calls += len(tools)
            final = answers[-1] if answers else None
            if final is not None and tools and not final.tool_calls and final.text:
                self.result.agent_finished += 1
                turns = ", ".join(str(a.response_metadata.get("route", "?")) for a in answers)
                self.say(f"{self._time()}  agent: {fmt.clip(task, 34)} (turns: {turns}) done")
            self.clock.advance(every_minutes * 60)
        self._count_phase(before)

    def outage(self, route: str) -> None:
        """The route's vendor answers its next request with a 500."""
        self.sim.inject(self.keys[route], Fault.SERVER_ERROR)
        self.result.faults_injected += 1
        self.say(f"{self._time()}  fault: {route}'s vendor will answer the next call with a 500")

    def bad_key(self, route: str) -> None:
        """The route's vendor rejects its key on the next request (a 401)."""
        self.sim.inject(self.keys[route], Fault.UNAUTHORIZED)
        self.result.faults_injected += 1
        self.say(f"{self._time()}  fault: {route}'s vendor will reject its key (401) next")

    def enable(self, route: str) -> None:
        """An operator re-enables the key (``quota-router enable ROUTE``)."""
        self.router.enable(route)
        self.say(f"{self._time()}  operator: quota-router enable {route}")


def _why(meta: dict[str, Any], route: str) -> str:
    """Why ``route`` answered, from the answer's ``attempts``: the routes passed
    over before it and their reasons, or that it is first choice again."""
    attempts = meta.get("attempts") or []
    passed = [a for a in attempts if a.get("outcome") != "served"]
    if not passed:
        return f"{route} is first choice again"
    last = passed[-1]  # the nearest cause: the route tried just before
    said = fmt.clip(f"{last['route']} {last['outcome']}, {last['reason']}", 100)
    before = len(passed) - 1
    return said + (f" ({before} more before it)" if before else "")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return fmt.clip(f"{type(exc).__name__}: {text[0] if text else ''}", 64)


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def _streamed(router: QuotaRoutedChatModel, prompt: str) -> BaseMessage:
    chunks = list(router.stream(prompt))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def _make_agent(router: QuotaRoutedChatModel) -> Callable[[str], list[BaseMessage]]:
    """LangChain's ``create_agent`` over the router (a bind_tools loop without it)."""
    try:
        from langchain.agents import create_agent
    except ImportError:  # langchain itself is optional: loop by hand, as it would
        return _tool_loop(router)
    agent = create_agent(model=router, tools=_TOOLS)

    def run(task: str) -> list[BaseMessage]:
        state = agent.invoke({"messages": [HumanMessage(task)]})
        return list(state["messages"])

    return run


def _tool_loop(router: QuotaRoutedChatModel) -> Callable[[str], list[BaseMessage]]:
    bound = router.bind_tools(_TOOLS)
    by_name = {t.name: t for t in _TOOLS}

    def run(task: str) -> list[BaseMessage]:
        messages: list[BaseMessage] = [HumanMessage(task)]
        for _ in range(5):
            answer = bound.invoke(messages)
            messages.append(answer)
            if not answer.tool_calls:
                break
            for call in answer.tool_calls:
                output = by_name[call["name"]].invoke(call["args"])
                messages.append(ToolMessage(str(output), tool_call_id=call["id"] or ""))
        return messages

    return run


def _workload(day: _Day) -> None:
    """08:00 to 22:00: the free tiers fill up one after another."""
    day.phase("morning: questions from the team, one every 4 minutes")
    day.questions(32, 4)
    day.at(10, 30)
    day.phase("a chat UI streams its answers")
    day.streams(8, 5)
    day.at(11, 30)
    day.outage(day.serving or "groq")
    day.questions(3, 1)
    day.at(12)
    day.phase("a tool-calling agent (create_agent) at work")
    day.agent_tasks(
        [
            "What is the weather in Oslo?",
            "Should I take an umbrella in Oslo today?",
            "Is it snowing in Oslo right now?",
        ],
        10,
    )
    day.at(13)
    day.phase("afternoon: questions, one every 3 minutes")
    day.questions(30, 3)
    day.at(14, 45)
    day.phase("a burst: 12 questions and an agent task within a minute")
    day.burst(4)
    # Gemini has one request left this minute: the agent's second turn moves on.
    day.agent_tasks(["What is the weather in Lima?"], 0)
    day.burst(8)
    day.at(15)
    day.phase("more questions")
    day.questions(24, 4)
    day.at(17)
    day.bad_key(day.serving or "cohere")
    day.questions(4, 2)
    day.at(17, 30)
    day.enable("cohere")
    day.phase("evening: questions")
    day.questions(24, 4)
    day.phase("evening: streamed answers")
    day.streams(4, 5)
    day.phase("evening: the agent again")
    day.agent_tasks(["What is the weather in Oslo tonight?", "Convert 100 NOK to EUR."], 10)
    day.at(20, 30)
    day.phase("late: the free tiers are spent; the paid key takes what is left")
    day.questions(5, 6)
    day.at(22)


# ------------------------------------------------------------------ the demo


def _build_router(
    sim: Simulator, clock: FakeClock, ledger: _CountingLedger, cache_dir: Path, keys: dict[str, str]
) -> QuotaRoutedChatModel:
    routes = []
    for vendor in DEMO_VENDORS:
        # Each vendor's own name for the output budget; a tight budget keeps the
        # router's token reservations close to what the calls really spend.
        budget = {("max_output_tokens" if vendor.vendor == "gemini" else "max_tokens"): 64}
        model: BaseChatModel = vendor_model(
            sim, vendor.vendor, keys[vendor.route], vendor.model, **budget
        )
        routes.append(
            Route(
                model,
                name=vendor.route,
                limits=list(vendor.limits),
                priority=vendor.priority,
                prices=vendor.prices,
            )
        )
    return QuotaRoutedChatModel(
        routes=routes,
        ledger=ledger,
        cache=DiskResponseCache(cache_dir, clock=clock),
        clock=clock,
    )


class _AlertNarrator(logging.Handler):
    """Tells the router's quota alerts (75/90/95 % of a limit) as progress lines.

    Per-minute limits are left out: they fill and drain all day, and their alerts
    would drown the story of the daily quotas.
    """

    def __init__(self, say: Callable[[str], None], clock: FakeClock) -> None:
        super().__init__(logging.WARNING)
        self.say = say
        self.clock = clock
        self.alerts = 0

    def emit(self, record: logging.LogRecord) -> None:
        alert = getattr(record, "quota_alert", None)
        if not isinstance(alert, QuotaAlert) or "/minute" in alert.limit:
            return
        self.alerts += 1
        when = dt.datetime.fromtimestamp(self.clock.now(), dt.timezone.utc)
        if alert.over:
            told = (
                f"{alert.pool} is over {alert.limit} "
                f"({alert.used} counted: {alert.over} {alert.note})"
            )
        else:
            told = f"{alert.pool} has used {alert.percent:.0f}% of {alert.limit}"
        self.say(f"{when:%H:%M}  alert: {told}")


@contextlib.contextmanager
def _narrated_router_logs(narrator: _AlertNarrator) -> Iterator[None]:
    """Route the router's log to the narrator instead of the terminal.

    Fallback warnings are told by the demo itself; alerts by the narrator.
    """
    logger = logging.getLogger("langchain_quota_router")
    propagate = logger.propagate
    logger.addHandler(narrator)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(narrator)
        logger.propagate = propagate


def run_demo(*, seconds: float = 30, out: TextIO | None = None, quiet: bool = False) -> DemoResult:
    """Run the demo: a simulated day over four simulated vendors; print the story.

    Args:
        seconds: wall-clock budget; the workload stops early (and says so) past it.
        out: where to print (default: ``sys.stdout`` at the time of the call).
        quiet: print only the closing summary, not the progress lines.

    Returns:
        The numbers the summary shows.
    """
    started = time.monotonic()
    result = DemoResult()
    if out is None:
        out = sys.stdout

    def say(line: str) -> None:
        if not quiet:
            out.write(line + "\n")
            out.flush()

    clock = FakeClock(DAY_START)
    # Made-up keys; only their aliases are ever printed.
    keys = {v.route: f"demo-{v.route}-key-0123456789" for v in DEMO_VENDORS}
    sim_keys = [sim_key(keys[v.route], v) for v in DEMO_VENDORS]
    narrator = _AlertNarrator(say, clock)
    with (
        tempfile.TemporaryDirectory(prefix="quota-router-demo-") as folder,
        Simulator(sim_keys, clock=clock) as sim,
        _narrated_router_logs(narrator),
    ):
        ledger = _CountingLedger(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            router = _build_router(sim, clock, ledger, Path(folder) / "cache", keys)
            _introduce(say, sim, folder)
            day = _Day(router, sim, clock, ledger, keys, result, say, started + seconds)
            _workload(day)
            _collect(result, router, sim, ledger, keys, clock)
            result.alerts = narrator.alerts
        finally:
            ledger.close()
    result.wall_seconds = time.monotonic() - started
    if not quiet:
        _show_usage(out, result)
    _summary(out, result)
    return result


def _introduce(say: Callable[[str], None], sim: Simulator, folder: str) -> None:
    say("quota-router demo: one simulated day over four vendors' free tiers")
    say(f"  vendors: the simulator at {sim.url} (no keys, no network)")
    say(f"  ledger and cache: {folder} (removed at the end)")
    say(f"  limits: the catalog's free tiers, every figure above {SMALL} divided by {SCALE};")
    say("  the router and the simulator get the same limits; a fake clock runs the day.")
    say("")
    for vendor in DEMO_VENDORS:
        limits = ", ".join(str(limit) for limit in vendor.limits)
        paid = " (paid, last in line)" if vendor.prices and any(vendor.prices) else ""
        say(f"  {vendor.route:<7} {vendor.model}{paid}")
        say(f"          {fmt.clip(limits, 70)}")


def _collect(
    result: DemoResult,
    router: QuotaRoutedChatModel,
    sim: Simulator,
    ledger: _CountingLedger,
    keys: dict[str, str],
    clock: FakeClock,
) -> None:
    stats = router.get_stats()
    result.calls_per_route = {
        v.route: stats["calls_per_route"].get(v.route, 0) for v in DEMO_VENDORS
    }
    result.fallbacks = stats["fallbacks"]
    result.cache_hits = stats["cache_hits"]
    result.errors = stats["errors"]
    for vendor in DEMO_VENDORS:
        route = router.route_map[vendor.route]
        seen = sim.stats(keys[vendor.route])
        result.vendor_429s[vendor.route] = seen.refused
        result.vendor_requests[vendor.route] = seen.received
        result.tokens += seen.input_tokens + seen.output_tokens
        result.refusals_avoided[vendor.route] = ledger.full[route.pool]
        result.holds_skipped[vendor.route] = ledger.held[route.pool]
    result.usage = router.usage()
    result.simulated_hours = (clock.now() - DAY_START) / 3600
    # The lifespan of the keys at today's pace: the tokens this day used, per day.
    result.lifespan_tokens_per_day = max(1, result.tokens)
    # The rows and lifespan the status page and `quota-router report` would show.
    status = read_status(router, tokens_per_day=result.lifespan_tokens_per_day)
    result.limits = status.limits
    if status.lifespan is not None:
        result.lifespan = dict(status.lifespan["days"])
        result.lifespan_back_at = dict(status.lifespan.get("back_at", {}))
    result.ended_at = status.now


def _show_usage(out: TextIO, result: DemoResult) -> None:
    out.write("\n22:00  quota left at the end of the day\n")
    rows = []
    for row in result.limits:
        rows.append(
            [
                row.pool,
                row.limit,
                f"{fmt.quantity(row.used, row.metric)}/{fmt.quantity(row.amount, row.metric)}",
                fmt.bar(row.percent),
            ]
        )
    out.write(fmt.table(["pool", "limit", "used", "usage"], rows, right=[2]) + "\n")


def _summary(out: TextIO, result: DemoResult) -> None:
    out.write("\nsummary\n")
    rows = []
    for vendor in DEMO_VENDORS:
        name = vendor.route
        usage = tightest(result.limits, name)
        rows.append(
            [
                name,
                str(result.calls_per_route.get(name, 0)),
                str(result.vendor_429s.get(name, 0)),
                str(result.refusals_avoided.get(name, 0)),
                f"{fmt.quantity(usage.used, usage.metric)}/"
                f"{fmt.quantity(usage.amount, usage.metric)} {fmt.short_limit(usage)}"
                if usage
                else "-",
                fmt.bar(usage.percent) if usage else "",
                fmt.lasts(
                    result.lifespan[name],
                    result.lifespan_back_at.get(name),
                    full=name in result.lifespan_back_at,
                    now=result.ended_at,
                )
                if name in result.lifespan
                else "-",
            ]
        )
    headers = ["route", "calls", "429s", "avoided", "tightest limit", "used", "lasts"]
    out.write(fmt.table(headers, rows, right=[1, 2, 3]) + "\n")
    served = f"{result.served}/{result.requests} calls served"
    if result.failed:
        served += f" ({result.failed} FAILED)"
    lines = [
        f"{served} in {result.simulated_hours:.0f} simulated hours, "
        f"{result.wall_seconds:.1f} s of real time",
        f"cache hits {result.cache_hits}, fallbacks {result.fallbacks}, "
        f"quota alerts {result.alerts}, agent tasks {result.agent_finished}/"
        f"{result.agent_runs} ({result.tool_calls} tool calls)",
        f"vendor errors absorbed {result.errors} (faults injected {result.faults_injected}), "
        f"429s received {sum(result.vendor_429s.values())}",
        f"requests not sent because the ledger knew a pool was full: "
        f"{sum(result.refusals_avoided.values())}",
    ]
    if "all" in result.lifespan:
        # The router's estimate counts token limits; request caps are not in it.
        lines.append(
            f"'lasts': at today's {fmt.count(result.lifespan_tokens_per_day)} tokens/day, "
            f"by token limits; all together: {fmt.days(result.lifespan['all'])}"
        )
    if result.stopped_early:
        lines.append("stopped early: the --seconds budget ran out")
    out.write("\n".join(lines) + "\n")
