"""corl_graph: budget-aware expert routing for LangChain / LangGraph applications."""
