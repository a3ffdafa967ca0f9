"""Hydra launchers shipped with bimt (found by Hydra's plugin discovery in `hydra_plugins`)."""
