"""Optimizers and learning-rate schedules (torch.optim's update rules); ``flat`` keeps a device's
parameters in one buffer for the one-launch multi-tensor update."""
from .optimizers import SGD, Adam, AdamW, CosineAnnealingLR, Optimizer, StepLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "StepLR", "CosineAnnealingLR"]
