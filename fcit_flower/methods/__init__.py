"""Client-side pieces of each continual-learning method."""
