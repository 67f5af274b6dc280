"""The RPG recipe: verl's PPO trainer with the RPG policy losses, the paper's data and reward."""
