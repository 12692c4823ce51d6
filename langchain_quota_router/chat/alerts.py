"""Quota alerts as LangChain custom events, to the run a call belongs to.

An invoke's run manager reaches the router; a stream's does not (LangChain gives
``_stream``/``_astream`` none), so ``QuotaRoutedChatModel.stream`` fixes the run id
and keeps its config in :data:`STREAM_RUN`, from which the run's callbacks are
rebuilt here: a bare model's ``astream_events`` sees its own alerts.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Sequence
from typing import TypeVar, cast

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.callbacks.manager import (
    adispatch_custom_event,
    ahandle_event,
    dispatch_custom_event,
    handle_event,
)
from langchain_core.runnables import (
    RunnableConfig,
    ensure_config,
)

from langchain_quota_router.quota.watch import (
    ALERT_EVENT,
    QuotaAlert,
)

#: The stream run in progress in this context (see ``QuotaRoutedChatModel.stream``).
STREAM_RUN: contextvars.ContextVar[RunnableConfig | None] = contextvars.ContextVar(
    "quota_router_stream_run", default=None
)


def with_run_id(config: RunnableConfig | None) -> RunnableConfig:
    """``config`` with a run id, so the LLM run LangChain starts has a known id."""
    config = ensure_config(config)
    if config.get("run_id") is None:
        config = cast(RunnableConfig, {**config, "run_id": uuid.uuid4()})
    return config


def stream_run_manager(
    run_manager: CallbackManagerForLLMRun | None,
) -> CallbackManagerForLLMRun | None:
    """The stream's own LLM run, rebuilt from its config when LangChain passed none."""
    if run_manager is not None:
        return run_manager
    return _rebuilt(CallbackManager, CallbackManagerForLLMRun)


def astream_run_manager(
    run_manager: AsyncCallbackManagerForLLMRun | None,
) -> AsyncCallbackManagerForLLMRun | None:
    """:func:`stream_run_manager` for the async stream."""
    if run_manager is not None:
        return run_manager
    return _rebuilt(AsyncCallbackManager, AsyncCallbackManagerForLLMRun)


_Run = TypeVar("_Run", CallbackManagerForLLMRun, AsyncCallbackManagerForLLMRun)


def _rebuilt(
    manager_type: type[CallbackManager] | type[AsyncCallbackManager], run_type: type[_Run]
) -> _Run | None:
    """The LLM run of the stream in progress (:data:`STREAM_RUN`), as ``run_type``."""
    config = STREAM_RUN.get()
    if config is None:
        return None
    manager = manager_type.configure(
        config.get("callbacks"),
        inheritable_tags=config.get("tags"),
        inheritable_metadata=config.get("metadata"),
    )
    run_id = config.get("run_id")
    assert run_id is not None
    return run_type(
        run_id=run_id,
        handlers=manager.handlers,
        inheritable_handlers=manager.inheritable_handlers,
        tags=manager.tags,
        inheritable_tags=manager.inheritable_tags,
        metadata=manager.metadata,
        inheritable_metadata=manager.inheritable_metadata,
    )


def dispatch_alerts(
    run_manager: CallbackManagerForLLMRun | None, alerts: Sequence[QuotaAlert]
) -> None:
    # An LLM run has no child manager; its handlers get the event with its run id,
    # as a callback manager's own on_custom_event would send it. Streams get no run
    # manager from LangChain: there the enclosing run (a chain, a graph) gets it.
    if run_manager is None:
        for alert in alerts:
            with contextlib.suppress(RuntimeError):  # no enclosing run: logged only
                dispatch_custom_event(ALERT_EVENT, alert.as_event())
    else:
        for alert in alerts:
            handle_event(
                run_manager.handlers,
                "on_custom_event",
                "ignore_custom_event",
                ALERT_EVENT,
                alert.as_event(),
                run_id=run_manager.run_id,
                tags=run_manager.tags,
                metadata=run_manager.metadata,
            )


async def adispatch_alerts(
    run_manager: AsyncCallbackManagerForLLMRun | None, alerts: Sequence[QuotaAlert]
) -> None:
    if run_manager is None:
        for alert in alerts:
            with contextlib.suppress(RuntimeError):  # no enclosing run: logged only
                await adispatch_custom_event(ALERT_EVENT, alert.as_event())
    else:
        for alert in alerts:
            await ahandle_event(
                run_manager.handlers,
                "on_custom_event",
                "ignore_custom_event",
                ALERT_EVENT,
                alert.as_event(),
                run_id=run_manager.run_id,
                tags=run_manager.tags,
                metadata=run_manager.metadata,
            )
