"""Integrations: LangChain drop-in, OpenAI-compatible server, vLLM helpers (imported as corl_graph.integrations)."""
