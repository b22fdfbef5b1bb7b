"""Stage 3: training on the slice cache."""
