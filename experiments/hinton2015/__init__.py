"""Hinton, Vinyals & Dean (2015), MNIST: the paper's protocol and the accuracy anchor (README.md here)."""
