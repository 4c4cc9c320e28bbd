"""A callback for resume tests: the process SIGKILLs itself in the middle of RL step `step`,
after that step's earlier mini-batch updates and before its last one (Lightning calls
`on_before_optimizer_step` for the step's last policy update)."""

import os
import signal

import lightning as L


class DieAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
