"""Optimizers (SGD, Adam, AdamW) and learning-rate schedules; clip_grad_norm_ also lives at nn.utils."""

from ..nn.utils import clip_grad_norm_
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "clip_grad_norm_", "lr_scheduler"]
