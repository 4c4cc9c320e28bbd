"""RunEndCallback: a stop signal ends a run between two steps, and a run's end is a state.

- SIGTERM (kill, timeout, docker, SLURM preemption): Lightning sets `trainer.received_sigterm`
  and raises `SIGTERMException` between two steps; the checkpoint callback then saves the last
  completed step (checkpoint.PeriodicCheckpoint.on_exception). A first Ctrl-C (SIGINT) is
  turned into the same stop; a second one stops at once. `signal_received` says which came.
- A resumed run whose training is already done (its checkpoint is of the last step): Lightning
  skips `on_train_start` and `on_train_end`, so the end of the run (the "after" pass@k, ...)
  would never run; here `on_fit_end` runs every callback's `on_train_end` in that case.
"""

from __future__ import annotations

import signal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class RunEndCallback(L.Callback):
    def __init__(self) -> None:
        self.signal_received: int | None = None
        self.trained = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trained = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning installed its SIGTERM handler just before: record the signal beside it."""
        self.trained = True
        lightning_sigterm = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame) -> None:
            self.signal_received = self.signal_received or signum
            if callable(lightning_sigterm):
                lightning_sigterm(signum, frame)

        def on_sigint(signum, frame) -> None:
            if self.signal_received is not None:
                raise KeyboardInterrupt  # the second Ctrl-C: stop now
            self.signal_received = signum
            trainer._signal_connector.received_sigterm = True  # the flag Lightning's loops check
            rank_zero_info(
                f"\nCtrl-C: stopping after step {trainer.global_step} and saving a checkpoint "
                "(Ctrl-C again to stop at once)"
            )

        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGINT, on_sigint)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trained:
            return
        rank_zero_info(f"training was already done at step {trainer.global_step}; running the end of the run")
        for callback in trainer.callbacks:
            if callback is not self:
                callback.on_train_end(trainer, pl_module)
        pl_module.on_train_end()
