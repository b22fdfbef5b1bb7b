"""What training and evaluation both read with: the slice dataset, the class-aware sampler, the loader and the batch transforms."""
