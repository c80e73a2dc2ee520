"""Replay evaluation: run any policy through the graph on recorded outcomes, per tier.

Metrics (``TierMetrics``): accuracy, mean and p95 cost per query, expert-call ratio, calls
per query, cap violations; ``aiq`` for the cost/accuracy curve (RouterBench's AIQ).
``run_benchmark`` compares every single model, the controller alone, random routing at
matched cost, the oracle, kNN and threshold routers, the neural policy and LLM controllers
(``endpoint_controller``: vLLM; any ``Policy`` as a ``ControllerSpec``). ``resolve_pool``
gives any table's pool, controller and tiers; ``ReplaySim`` is the vectorised replica of a
routing episode that training and calibration run (the training package imports it from
here; nothing here imports training or torch).
"""

from corl_graph.evaluation._baselines import (
    OraclePolicy,
    calibrate_knn,
    calibrate_threshold,
    fit_knn,
    fit_threshold,
    matched_random,
)
from corl_graph.evaluation._bundled import (
    load_bundled_embeddings,
    load_bundled_policy,
    load_bundled_router,
)
from corl_graph.evaluation._controllers import ControllerSpec, endpoint_controller
from corl_graph.evaluation._embed import (
    load_embeddings,
    query_text,
    save_embeddings,
    table_embeddings,
)
from corl_graph.evaluation._harness import evaluate_policy, judge, route_queries, test_queries
from corl_graph.evaluation._metrics import QueryOutcome, TierMetrics, aiq, summarize, upper_hull
from corl_graph.evaluation._pool import PoolSetup, derive_tiers, parse_tiers, resolve_pool
from corl_graph.evaluation._predictors import LAMBDAS, fit_mf, fit_mlp
from corl_graph.evaluation._presets import PRESETS, TablePreset, preset_experts, preset_for
from corl_graph.evaluation._router_fit import RouterFitConfig, fit_router, router_outcomes
from corl_graph.evaluation._sim import EpisodeArrays, ReplaySim, episode_arrays, run_episodes
from corl_graph.evaluation._suite import BenchmarkResult, run_benchmark, write_plot

__all__ = [
    "LAMBDAS",
    "PRESETS",
    "BenchmarkResult",
    "ControllerSpec",
    "EpisodeArrays",
    "OraclePolicy",
    "PoolSetup",
    "QueryOutcome",
    "ReplaySim",
    "RouterFitConfig",
    "TablePreset",
    "TierMetrics",
    "aiq",
    "calibrate_knn",
    "calibrate_threshold",
    "derive_tiers",
    "endpoint_controller",
    "episode_arrays",
    "evaluate_policy",
    "fit_knn",
    "fit_mf",
    "fit_mlp",
    "fit_router",
    "fit_threshold",
    "judge",
    "load_bundled_embeddings",
    "load_bundled_policy",
    "load_bundled_router",
    "load_embeddings",
    "matched_random",
    "parse_tiers",
    "preset_experts",
    "preset_for",
    "query_text",
    "resolve_pool",
    "route_queries",
    "router_outcomes",
    "run_benchmark",
    "run_episodes",
    "save_embeddings",
    "summarize",
    "table_embeddings",
    "test_queries",
    "upper_hull",
    "write_plot",
]
