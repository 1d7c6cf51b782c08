"""Training networks: the one recipe, many networks at once, fresh networks trained on a set, torchrun."""
