"""The four ways into a chat model, so every routing behaviour runs on each of them."""

from __future__ import annotations

import operator
from functools import reduce
from typing import Any

from langchain_core.messages import AIMessage, message_chunk_to_message

PATHS = ["invoke", "ainvoke", "stream", "astream"]


async def ask(llm: Any, how: str, prompt: Any = "hello", **kwargs: Any) -> AIMessage:
    """One call by ``how``; a stream's chunks are merged into one message."""
    if how == "invoke":
        return llm.invoke(prompt, **kwargs)
    if how == "ainvoke":
        return await llm.ainvoke(prompt, **kwargs)
    if how == "stream":
        chunks = list(llm.stream(prompt, **kwargs))
    else:
        chunks = [chunk async for chunk in llm.astream(prompt, **kwargs)]
    message = message_chunk_to_message(reduce(operator.add, chunks))
    assert isinstance(message, AIMessage)
    return message
