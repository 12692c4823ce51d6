"""LiteLLM's ``provider_budget_config`` under the same load as ``budget.py`` part 1.

Not run by the project's own venv: LiteLLM is not a dependency. In a scratch venv::

    python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install litellm==1.110.2
    for n in 1 20 50; do /tmp/litellm-venv/bin/python benchmarks/budget_litellm.py $n; done

Offline: ``mock_response`` answers without a network (20 mock output tokens priced at
$0.003 a call) and the local cost map is used. A $0.005/day budget for the provider;
each caller asks until refused (at most 20 times).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm
from litellm import Router

BUDGET = 0.005


def _router() -> Any:
    litellm.suppress_debug_info = True
    return Router(
        model_list=[
            {
                "model_name": "m",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_key": "sk-fake",
                    "mock_response": "hi",
                    "input_cost_per_token": 0.0,
                    "output_cost_per_token": 0.003 / 20,  # a mock answer: 20 tokens
                },
            }
        ],
        provider_budget_config={"openai": {"budget_limit": BUDGET, "time_period": "1d"}},
    )


async def run(callers: int) -> tuple[int, float]:
    router = _router()
    spent: list[float] = []

    async def caller(i: int) -> None:
        for n in range(20):
            try:
                answer = await router.acompletion(
                    model="m", messages=[{"role": "user", "content": f"q{i}.{n}"}], max_tokens=1
                )
            except Exception:
                return
            spent.append(float(answer._hidden_params.get("response_cost") or 0.0))
            await asyncio.sleep(0.05)  # give its spend tracking time to catch up

    await asyncio.gather(*(caller(i) for i in range(callers)))
    return len(spent), sum(spent)


if __name__ == "__main__":
    callers = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    calls, total = asyncio.run(run(callers))
    print(f"litellm callers={callers} calls={calls} spent=${total:.4f} ratio={total / BUDGET:.2f}")
