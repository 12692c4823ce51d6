"""What a call costs, in the ledger's unit for money: whole micro-dollars.

Vendors price tokens in USD per million, so a token count times a price per million
*is* micro-dollars: ``1,000 tokens x $0.15/M = 150`` micro-dollars ($0.00015). The
arithmetic is exact (prices are read through their shortest decimal form) and rounds
up, so an estimate or a settled cost is never below what the vendor bills.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from langchain_quota_router.quota.errors import ConfigurationError
from langchain_quota_router.quota.limits import MAX_AMOUNT, MICRO

__all__ = ["Prices", "micro_dollars"]


def _exact(price: float) -> Fraction:
    # repr() is the shortest decimal that reads back as this float: 0.15 is 3/20,
    # not 0.1499999999999999944488848768742172978818416595458984375.
    return Fraction(repr(float(price)))


def micro_dollars(dollars: float) -> int:
    """A cost in dollars (a vendor's reported ``usage.cost``) as micro-dollars,
    rounded up; negative or not-a-number is 0."""
    if not isinstance(dollars, (int, float)) or isinstance(dollars, bool):
        return 0
    if not math.isfinite(dollars) or dollars <= 0:
        return 0
    return min(MAX_AMOUNT, math.ceil(_exact(dollars) * MICRO))


@dataclass(frozen=True)
class Prices:
    """A model's list prices, USD per million tokens.

    Attributes:
        input: per million prompt tokens.
        output: per million output tokens (reasoning tokens are output tokens:
            vendors count and bill them so).
        cached_input: per million prompt tokens read from the vendor's prompt
            cache, where the vendor prices them apart; ``None``: as ``input``.
    """

    input: float
    output: float
    cached_input: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input"):
            value = getattr(self, name)
            if value is None and name == "cached_input":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                msg = f"a {name} price must be a finite number of USD per million tokens, not negative; got {value!r}"  # noqa: E501
                raise ConfigurationError(msg)

    @property
    def free(self) -> bool:
        """Whether calls cost nothing (a free tier's ``(0, 0)``)."""
        return self.input == 0 and self.output == 0 and not self.cached_input

    def estimate(self, input_tokens: int, output_tokens: int) -> int:
        """Micro-dollars a call may cost at most: its whole prompt at the full input
        price (a cache hit is not known beforehand) and its whole output budget."""
        return self.cost(input_tokens, output_tokens)

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Micro-dollars a call cost, rounded up.

        Args:
            input_tokens: every prompt token, cached ones included (as LangChain's
                ``usage_metadata["input_tokens"]`` counts them).
            output_tokens: every output token, reasoning included.
            cached_tokens: how many of the prompt tokens the vendor's cache served.
        """
        cached = min(max(0, cached_tokens), max(0, input_tokens))
        cached_price = self.input if self.cached_input is None else self.cached_input
        total = (
            (max(0, input_tokens) - cached) * _exact(self.input)
            + cached * _exact(cached_price)
            + max(0, output_tokens) * _exact(self.output)
        )
        return min(MAX_AMOUNT, math.ceil(total))

    def dollars(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """:meth:`cost` in dollars."""
        return self.cost(input_tokens, output_tokens, cached_tokens) / MICRO
