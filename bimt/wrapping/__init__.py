"""BIMT on a researcher's own PyTorch model: `wrap(model)` reads it as neuron spaces (`trace`) and
gives its connection cost, relocation and picture (`wrapped`), with the user's own optimizer."""

from bimt.wrapping.trace import Attention, WrapError
from bimt.wrapping.wrapped import WrappedModel, wrap

__all__ = ["Attention", "WrapError", "WrappedModel", "wrap"]
