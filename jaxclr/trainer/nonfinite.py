"""The host side of the non-finite guard: what a run does about updates the step skipped.

The train step (`jaxclr.trainer.step`) never applies a non-finite update; it counts the skipped
steps in the state. `NonFiniteGuard` reads those counters where the host syncs anyway (log,
checkpoint and eval steps), compares them with the previous look and applies
`train.on_nonfinite`: 'stop' raises `NonFiniteLoss` at the first look that finds a skipped step;
'skip' reports the skips and raises once `train.max_skips` consecutive updates were skipped.
"""
from __future__ import annotations

ON_NONFINITE = ("stop", "skip")     # the values of train.on_nonfinite


class NonFiniteLoss(RuntimeError):
    """Training hit a non-finite loss, gradient or update and `train.on_nonfinite` says stop."""


class NonFiniteGuard:
    """Host side of the non-finite guard: applies ``train.on_nonfinite`` to the step's counters.

    Built when the train loop is set up, which validates ``train.on_nonfinite`` ('stop' or
    'skip') and ``train.max_skips`` on every run. ``check(step, metrics)`` takes the fetched
    metrics of a step where the loop syncs anyway (log, checkpoint, eval); it compares the
    skip count with the previous check's and raises ``NonFiniteLoss`` for 'stop' at the first
    new skip, and for 'skip' once ``max_skips`` consecutive updates have been skipped; otherwise
    it returns a line about the new skips to print (None when there are none).
    """

    def __init__(self, train_cfg, start_step: int, skipped: int = 0):
        self.mode = train_cfg.on_nonfinite
        if self.mode not in ON_NONFINITE:
            raise ValueError(f"train.on_nonfinite={self.mode!r} is not one of the allowed values "
                             f"{', '.join(map(repr, ON_NONFINITE))}")
        self.max_skips = int(train_cfg.max_skips)
        if self.max_skips < 1:
            raise ValueError(f"train.max_skips must be >= 1, got {self.max_skips}")
        self.checked_step = int(start_step)    # the step of the previous check
        self.skipped = int(skipped)            # the skip count seen by the previous check

    def check(self, step: int, metrics: dict[str, float]) -> str | None:
        skipped = int(metrics["train/skipped_steps"])
        new, since = skipped - self.skipped, self.checked_step
        self.skipped, self.checked_step = skipped, step
        too_many = int(metrics["train/max_skips_in_a_row"]) >= self.max_skips
        if not new and not too_many:
            return None
        what = _describe(step, since, new, int(metrics["train/skips_in_a_row"]), metrics)
        if self.mode == "stop":
            raise NonFiniteLoss(f"{what}; stopped (train.on_nonfinite='stop'), no checkpoint of this step: lower "
                                "optim.lr (or raise optim.warmup_steps), check the data, or set "
                                "train.on_nonfinite='skip' to skip such steps")
        if too_many:
            raise NonFiniteLoss(f"{what}; stopped after {int(metrics['train/max_skips_in_a_row'])} skipped "
                                f"steps in a row (train.max_skips={self.max_skips}): lower optim.lr (or raise "
                                "optim.warmup_steps) or check the data")
        return f"{what}; skipped ({skipped} skipped in all, train.on_nonfinite='skip')"


def _describe(step: int, since: int, new: int, in_a_row: int, metrics: dict[str, float]) -> str:
    """'non-finite loss/gradients at step(s) ...: <what was not finite at `step`>' for a message."""
    if new and in_a_row >= new:       # the new skips are the last `new` steps up to `step`
        where = f"step {step}" if new == 1 else f"steps {step - new + 1}-{step}"
    elif new:
        where = f"{new} of steps {since + 1}-{step}"
    else:                             # only after a resume with a lower train.max_skips
        where = f"steps before step {since + 1}"
    if metrics.get("nonfinite"):
        names = sorted((k.removeprefix("nonfinite/") for k, v in metrics.items() if k.startswith("nonfinite/") and v),
                       key=lambda name: (not name.startswith("loss"), name))   # loss, loss/<term>, grads, update
        seen = f"non-finite at step {step}: {', '.join(names)}"
    else:
        seen = f"step {step} itself was finite (train.log_every=1 shows which terms)"
    return f"non-finite loss or gradients at {where}, not applied ({seen})"
