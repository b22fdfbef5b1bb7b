"""Shared contracts about images, below every stage: reading volumes with the checks that turn bad files into
errors naming the subject and file, their memory estimate, and the geometry between a CT grid and the cache."""
