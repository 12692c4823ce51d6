"""A local simulator of the OpenAI, Groq, Gemini and Cohere chat APIs (and the
OpenAI, Gemini and Cohere embedding APIs), for tests.

It lets the real LangChain vendor classes (``ChatOpenAI``, ``ChatGroq``,
``ChatGoogleGenerativeAI``, ``ChatCohere``) run over real HTTP on 127.0.0.1, with
per-key limits enforced in each vendor's windows, each vendor's 429 format,
deterministic or scripted answers, tool calls, streaming, usage, and faults::

    from langchain_quota_router.simulator import SimKey, Simulator, vendor_model

    with Simulator([SimKey("gsk-test", "groq", rpm=30, tpm=12000)]) as sim:
        llm = vendor_model(sim, "groq", "gsk-test", "openai/gpt-oss-120b")
        llm.invoke("hello")
        sim.stats("gsk-test").served  # 1

Tokens are counted as ``ceil(characters / 4)`` of the request (every message and
tool definition) and of the answer; what is reported as usage is exactly what is
counted against the limits.

Models: ``Simulator(keys, models={"groq": ["openai/gpt-oss-120b", ...]})`` serves
exactly those on that vendor's wire (a vendor not given serves every name), each
vendor's list-models endpoint answers from them, and
``sim.retire("llama-3.3-70b-versatile", vendor="groq")`` makes a model answer as
the vendor does after a shutdown; ``sim.model_stats(model)`` counts its requests.

Embeddings: ``vendor_embeddings(sim, "openai", key, "text-embedding-3-small")``
builds ``OpenAIEmbeddings`` (likewise ``GoogleGenerativeAIEmbeddings`` and
``CohereEmbeddings``) against the simulator, retries off. Vectors are unit vectors
determined by (model, dimension, text); embed calls count against the key's limits
like chat calls.
"""

from ._cli import main
from ._clients import vendor_embeddings, vendor_model
from ._server import Simulator
from ._types import (
    Fault,
    KeyStats,
    RecordedRequest,
    Reply,
    RetireStyle,
    SimKey,
    SimModel,
    ToolCall,
    Vendor,
)

__all__ = [
    "Fault",
    "KeyStats",
    "RecordedRequest",
    "Reply",
    "RetireStyle",
    "SimKey",
    "SimModel",
    "Simulator",
    "ToolCall",
    "Vendor",
    "main",
    "vendor_embeddings",
    "vendor_model",
]
