"""Notes: a model, the agent that reads it, a permission hook."""
