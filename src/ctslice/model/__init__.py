"""The network and what a trained one is saved as: written by train/, read by evaluate/ and predict alike."""
