"""RunEndCallback: a stop signal ends a run between two steps, and a run's end is a state.

- SIGTERM (kill, timeout, docker, SLURM preemption) or a first Ctrl-C (SIGINT): the handler only
  records it (and passes a SIGTERM on to Lightning's child processes). After each step, all
  ranks agree (a max over ranks, so a signal that reached one rank stops them all at the same
  step) and set Lightning's `received_sigterm`, which makes it raise `SIGTERMException` right
  after that step on every rank; the checkpoint callback then saves the last completed step
  (checkpoint.PeriodicCheckpoint.on_exception). A second Ctrl-C stops at once. Lightning's own
  handler is replaced while training: it runs a collective inside the signal handler, which
  hangs DDP when a rank gets the signal twice (from the scheduler and from its parent).
- A resumed run whose training is already done (its checkpoint is of the last step): Lightning
  skips `on_train_start` and `on_train_end`, so the end of the run (the "after" pass@k, ...)
  would never run; here `on_fit_end` runs both, in that order, as Lightning's fit loop does
  (every callback, the module, the strategy): each callback's end finds what its start set up.
"""

from __future__ import annotations

import signal

import lightning as L
import torch
from lightning.pytorch.trainer import call
from lightning.pytorch.utilities import rank_zero_info

from nsr_lightning.run_dir import set_signal


class RunEndCallback(L.Callback):
    def __init__(self) -> None:
        self.signal_received: int | None = None
        self.trained = False

    def record(self, signum, frame=None) -> None:
        """A signal before training starts (setup, restore): acted on after the first step."""
        self.signal_received = self.signal_received or signum

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.trained = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # Ctrl-C outside our handler (before training)
            self.record(signal.SIGINT)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning installed its SIGTERM handler just before (its teardown restores the old ones)."""
        self.trained = True

        def on_signal(signum, frame) -> None:
            if self.signal_received is not None:
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt  # the second Ctrl-C: stop now
                return
            self.signal_received = signum
            launcher = trainer.strategy.launcher
            if signum == signal.SIGTERM and launcher is not None:
                launcher.kill(signum)  # Lightning's child processes (a no-op in them)
            again = " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            what = "finishing the run's end" if trainer.fit_loop.done else "stopping after this step"
            rank_zero_info(f"\n{signal.Signals(signum).name}: {what} and saving a checkpoint{again}")

        set_signal(signal.SIGTERM, on_signal)
        set_signal(signal.SIGINT, on_signal)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stop = self.signal_received is not None
        if trainer.world_size > 1:
            flag = torch.tensor(int(stop), device=pl_module.device)
            stop = bool(trainer.strategy.reduce(flag, reduce_op="max").item())
        if stop:
            trainer._signal_connector.received_sigterm = True  # the flag Lightning's loops check

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trained:
            return
        rank_zero_info(f"training was already done at step {trainer.global_step}; running the end of the run")
        # The pair Lightning skipped, as its fit loop calls it: a callback's on_train_end may need
        # what its on_train_start set up (the progress bar's bar); this one's installs the handlers.
        for hook in ("on_train_start", "on_train_end"):
            call._call_callback_hooks(trainer, hook)
            call._call_lightning_module_hook(trainer, hook)
            call._call_strategy_hook(trainer, hook)
