"""Layers: thin holders of parameters that call the functional ops in gpucnn.ops."""
from .activation import Dropout, LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer
from .batchnorm import BatchNorm1D, BatchNorm2D
from .conv import Conv2D
from .dense import Dense, Flatten
from .global_pool import AdaptiveAvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D
from .merge import Add, Concatenate
from .pool import AvgPool2D, MaxPool2D
from .softmax import Reshape, Softmax

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "Dense", "Flatten", "ReLU", "LeakyReLU", "Sigmoid",
           "Tanh", "Dropout", "BatchNorm1D", "BatchNorm2D", "Add", "Concatenate", "GlobalAvgPool2D",
           "GlobalMaxPool2D", "AdaptiveAvgPool2D", "Softmax", "Reshape"]
