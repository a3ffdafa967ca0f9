"""An experiment's life cycle: schema → validate (pure) → plan (resolve once) → run (lockstep
training, finishing) → run directory (status, checkpoint, TensorBoard, report).

Hydra appears here and in the entry points only; everything below (`bimt.training` and down) is
plain PyTorch, usable from a notebook.
"""
