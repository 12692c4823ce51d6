"""LangChain's standard unit tests for chat models, run against the router."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_quota_router import QuotaRoutedChatModel, Route
from langchain_quota_router.testing import FakeVendorChatModel


class TestQuotaRoutedChatModelStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[QuotaRoutedChatModel]:
        return QuotaRoutedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "routes": [
                Route(FakeVendorChatModel(model="m1"), name="first", priority=1),
                Route(FakeVendorChatModel(model="m2"), name="second", priority=2),
            ],
            "ledger": "memory://",
            "cache": False,
        }

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The router holds no credentials of its own: each vendor model behind a
        # route carries its key. The unit-test suite adds ``api_key="test"`` for
        # single-vendor integrations; everything else it passes is kept.
        params = super().standard_chat_model_params
        params.pop("api_key", None)
        return params

    @property
    def init_from_env_params(
        self,
    ) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        # The only setting read from the environment is the ledger URL; the
        # router it opens has no attribute that compares equal, so no attrs.
        params = {k: v for k, v in self.chat_model_params.items() if k != "ledger"}
        return {"QUOTA_ROUTER_LEDGER": "memory://"}, params, {}

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
    def returns_usage_metadata(self) -> bool:
        return True
