"""A callback for stop tests: the process sends itself `signum` (default SIGTERM) in the middle
of RL step `step`, before that step's last policy update, as a scheduler's preemption would."""

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step, self.signum, self.sent = step, int(signum), False

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class KillAtTrainEnd(L.Callback):
    """SIGKILL in on_train_end: after the last step's checkpoint, before the callbacks listed
    after this one (e.g. the final pass@k) have run."""

    def on_train_end(self, trainer, pl_module) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
