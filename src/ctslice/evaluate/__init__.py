"""Stage 4: evaluation on whole 3D subjects."""
