"""The network and what a trained one is saved as: written by train/, read by evaluate/ and predict alike.

unet.py (the U-Net), checkpoint.py (the checkpoint format, its file names and `Checkpoint`), load.py (a model
from a checkpoint), device.py (the device names and their resolution)."""
