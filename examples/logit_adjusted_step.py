"""Logit adjustment written as a training step instead of a loss (docs/your_method.md §5): a
``Trainer`` subclass that adds ``tau * log(prior)`` to the logits inside the step and trains
them with the configured loss (CE in a comparison). With CE it is the same training as
``examples/logit_adjustment.py:LogitAdjustedLoss`` (a test checks it number for number); it is here
to show the extension point for methods that change the step, not only the loss.

``python -m ltbench compare --method examples/logit_adjusted_step.py:LogitAdjustedStep --param tau=1.0
--profile quick``. Keyword arguments of ``__init__`` with defaults are the method's parameters.
"""
import torch

from ltbench.engine import Trainer


class LogitAdjustedStep(Trainer):
    """Logit-adjusted training as a step: the configured loss on ``z + tau * log(prior)``."""

    def __init__(self, cfg, data=None, progress=True, tau: float = 1.0):
        super().__init__(cfg, data, progress)
        counts = torch.tensor(self.counts, dtype=torch.float32, device=self.device)
        self.shift = float(tau) * torch.log(counts / counts.sum())

    def step_loss(self, x, y, *, mask=None):
        with self.autocast():
            logits = self.forward(x)
        return self.criterion(logits.float() + self.shift, y, mask)
