"""Training: the epoch loop (``fit``), ``evaluate``, training checkpoints and the progress bar."""
from .checkpoint import load_training_checkpoint, save_training_checkpoint
from .loop import TrainingDiverged, evaluate, fit

__all__ = ["fit", "evaluate", "TrainingDiverged", "save_training_checkpoint", "load_training_checkpoint"]
