"""Training: the one epoch loop (``fit``) over the eager or the CUDA-graph step, ``evaluate``, training
checkpoints, signals and the progress bar."""
from .checkpoint import load_training_checkpoint, save_training_checkpoint
from .evaluate import evaluate
from .loop import TrainingDiverged, fit
from .signals import TrainingInterrupted

__all__ = ["fit", "evaluate", "TrainingDiverged", "TrainingInterrupted", "save_training_checkpoint",
           "load_training_checkpoint"]
