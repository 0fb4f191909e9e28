"""Optimizers with parameter groups, learning-rate schedules, gradient clipping and weight averaging, with
torch.optim's names and semantics; ``flat`` keeps a device's parameters in one buffer for the one-launch
multi-tensor update.

- optimizers.py: SGD, Adam, AdamW (base.py: the Optimizer base class, parameter groups, checkpoint state)
- schedules.py: StepLR, CosineAnnealingLR, LinearLR, LinearWarmup, SequentialLR; onecycle.py: OneCycleLR;
  plateau.py: ReduceLROnPlateau
- clip.py: clip_grad_norm_; ema.py: EMA; param_groups.py: param_groups_no_decay
"""
from .base import Optimizer
from .clip import clip_grad_norm_
from .ema import EMA
from .optimizers import SGD, Adam, AdamW
from .param_groups import param_groups_no_decay
from .plateau import ReduceLROnPlateau
from .onecycle import OneCycleLR
from .schedules import CosineAnnealingLR, LinearLR, LinearWarmup, LRScheduler, SequentialLR, StepLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR",
           "LinearWarmup", "OneCycleLR", "SequentialLR", "ReduceLROnPlateau", "clip_grad_norm_", "EMA",
           "param_groups_no_decay"]
