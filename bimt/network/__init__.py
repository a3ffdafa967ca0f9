"""The network: neurons at coordinates (`geometry`), the model with its replicas (`model`), the
connection cost (`cost`), relocation by swaps that lower it (`relocation`) and the flat AdamW
(`optim`). It knows nothing of tasks, training loops, files or Hydra.
"""

from bimt.network.cost import connection_cost
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.network.relocation import relocate

__all__ = ["AdamW", "BioMLP", "connection_cost", "relocate"]
