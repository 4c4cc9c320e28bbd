"""Lightning callbacks, installed as `nsr_lightning.callbacks`."""

from nsr_lightning.callbacks.heldout import HeldOutDynamicsCallback
from nsr_lightning.callbacks.pass_at_k import PassAtKCallback
from nsr_lightning.callbacks.rollout import RolloutCallback
from nsr_lightning.callbacks.run_end import RunEndCallback

__all__ = ["HeldOutDynamicsCallback", "PassAtKCallback", "RolloutCallback", "RunEndCallback"]
