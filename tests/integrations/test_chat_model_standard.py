"""LangChain's standard chat-model suites for CORLChatModel, offline on fake experts.

Tool calling, tool choice, structured output (all three methods), JSON mode, streaming and
usage metadata are declared, so those tests run. The skips left, each for a stated reason:

- multimodal inputs (images, PDF, audio, video, Anthropic-format blocks): not declared; the
  router's experts are text chat models and the query is text, so the suites skip them;
- ``test_init_from_env`` / ``test_serdes``: CORLChatModel reads no environment variables and
  is not LangChain-serialisable (it holds a live ``Router`` with its ledger), so the suite
  skips them;
- VCR-recorded tests (``test_stream_time``): they replay an HTTP cassette; CORLChatModel makes
  no HTTP call of its own (``enable_vcr_tests`` stays False).
"""

from __future__ import annotations

from typing import Any

from corl_graph.integrations import CORLChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from tool_fakes import generic, tool_router


def _params() -> dict[str, Any]:
    router, _ = tool_router(generic, generic)
    return {"router": router, "model": "corl-high"}


class _Declared:
    @property
    def chat_model_class(self) -> type[CORLChatModel]:
        return CORLChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The suite's defaults minus two that CORLChatModel refuses rather than drop:
        # max_retries (the router has no retries of its own; each expert retries its calls,
        # ChatModelExpert(max_retries=...)) and the unit suite's api_key (the router holds
        # no key; each expert's chat model holds its provider's).
        params = dict(super().standard_chat_model_params)  # type: ignore[misc]
        params.pop("max_retries", None)
        params.pop("api_key", None)
        return params

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
    def model_override_value(self) -> str:
        return "corl-low"


class TestCORLChatModelUnit(_Declared, ChatModelUnitTests):
    pass


class TestCORLChatModelIntegration(_Declared, ChatModelIntegrationTests):
    pass
