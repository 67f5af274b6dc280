"""Recipes built on verl's trainer (Hydra configs, entry points, reward functions)."""
