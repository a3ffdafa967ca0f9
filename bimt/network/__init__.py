"""The network: neurons at coordinates (`geometry`), neuron spaces and the maps between them
(`spaces`), the models with their replicas (`spatial`, `model`, `transformer`), the connection cost
(`cost`), relocation by swaps that lower it (`relocation`) and the flat AdamW (`optim`). It knows
nothing of tasks, training loops, files or Hydra.
"""

from bimt.network.cost import connection_cost
from bimt.network.model import BioMLP
from bimt.network.optim import AdamW
from bimt.network.relocation import relocate
from bimt.network.spaces import Map, Network, Space
from bimt.network.spatial import SpatialModel
from bimt.network.transformer import BioTransformer

__all__ = ["AdamW", "BioMLP", "BioTransformer", "Map", "Network", "Space", "SpatialModel", "connection_cost", "relocate"]
