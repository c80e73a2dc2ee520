"""Training: trajectories to PPO / GRPO updates of the controller (imported as corl_graph.training)."""
