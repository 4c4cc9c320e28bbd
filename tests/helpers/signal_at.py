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


class KillInFinalPassAtK(L.Callback):
    """SIGKILL inside the final ("after") pass@k, once its samples are scored and before they are
    recorded: a run killed at its end, whatever the order of the callbacks."""

    def setup(self, trainer, pl_module, stage) -> None:
        (pass_at_k,) = [c for c in trainer.callbacks if type(c).__name__ == "PassAtKCallback"]
        counts, evaluate = pass_at_k._counts, pass_at_k.evaluate

        def evaluate_then_die(trainer, pl_module, tag):
            if tag == "after":
                pass_at_k._counts = lambda *args: [counts(*args), os.kill(os.getpid(), signal.SIGKILL)]
            return evaluate(trainer, pl_module, tag)

        pass_at_k.evaluate = evaluate_then_die
