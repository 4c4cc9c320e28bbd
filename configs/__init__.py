"""Hydra config groups, shipped as `nsr_lightning.configs`."""
