"""``python -m corl_graph.cli ...`` is ``corl-graph ...`` (for launchers such as torchrun that
take a module, where the console script is not on the PATH)."""

from corl_graph.cli import main

raise SystemExit(main())
