"""Stop a diverged run: a non-finite training loss ends training with one line, and non-finite weights are never
saved. Shared by ``MixProTrainer``, ``mixpro-train`` and the no-Trainer example; the output-folder guard calls
:func:`nonfinite_parameter_names` before it writes weights.

Cost. :class:`NonFiniteLossWatch` looks at the loss of every micro-batch with device-side tensor operations only
(no host sync, no collective per step): it keeps the first step whose loss was NaN/inf and that loss. The processes
compare their watches (one small gather, one host sync) in :meth:`NonFiniteLossWatch.check`, which the training
loops call where they already synchronise: at each logging step (the Trainer gathers the loss there anyway), before
each evaluation, before each save and at the end of training. Every step is watched, so the step and loss reported
are the first non-finite ones on any process; what the periodic check costs is at most ``logging_steps`` wasted
steps after a divergence, never a saved or returned non-finite model: the weights written by a save are also
checked with :func:`nonfinite_parameter_names` (a loss can be finite at the step whose update made the weights
non-finite).

Mixed precision. The loss a training step returns is the unscaled one (fp16 loss scaling multiplies it only inside
``backward``); an fp16 step that overflows in the backward pass is skipped by the gradient scaler and its loss is
still finite, so skipped steps are not reported. Only a loss that is itself NaN/inf counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

NO_STEP = float("inf")  # the watch's "no non-finite loss yet"


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss or non-finite weights; ``str()`` is one line (step, value, likely cause).
    Nothing non-finite was saved."""


def nonfinite_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters and floating-point buffers of ``model`` holding a NaN or an infinity.

    One host sync for the whole model (the per-tensor flags are stacked before they are read), so a save can call
    it every time. Sharded parameters (FSDP ``DTensor``) are checked on their local shard."""
    named = [(n, t) for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()]
    if not named:
        return []
    flags = [torch.isfinite(getattr(t, "_local_tensor", t).detach()).all() for _, t in named]
    device = flags[0].device
    finite = torch.stack([flag.to(device) for flag in flags]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


def nonfinite_weights_message(names: list[str], what: str) -> str:
    """One line: which weights are non-finite (a few of ``names``), that ``what`` was not saved, the likely cause."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"training diverged: NaN/inf weights ({shown}), so {what} was not saved; {LIKELY_CAUSE}"


def check_finite_weights(model: nn.Module, what: str) -> None:
    """Raise :class:`TrainingDiverged` (one line naming a few parameters) when ``model`` holds NaN/inf weights,
    before ``what`` (e.g. ``"checkpoint-3"``) is written."""
    bad = nonfinite_parameter_names(model)
    if bad:
        raise TrainingDiverged(nonfinite_weights_message(bad, what))


LIKELY_CAUSE = (
    "likely cause: a learning rate too high for this model and batch (try a 10x smaller --learning_rate, a "
    "--warmup_steps share, or --max_grad_norm 1.0), or fp16 overflow (use --bf16)"
)


class NonFiniteLossWatch:
    """The first non-finite training loss of this process, kept on the device (see the module docstring).

    ``observe(loss, step)`` every micro-batch; ``check(gather)`` at logging / evaluation / save points, with
    ``gather`` concatenating a tensor over the processes (``accelerator.gather``); it raises
    :class:`TrainingDiverged` on every process alike when any process saw a NaN/inf loss."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        # (step, loss, learning rate) of the first non-finite loss; step NO_STEP while there is none. On the
        # device of the losses, which is also the one the processes' collectives use (NCCL: the GPU).
        self._first = torch.tensor([NO_STEP, 0.0, math.nan], device=device)

    def observe(self, loss: torch.Tensor, step: int, learning_rate: float = math.nan) -> None:
        """Record ``loss`` of training step ``step`` (1-based, as logged), trained at ``learning_rate``, if it is
        the first non-finite one. Device-side operations only: no host sync."""
        loss = loss.detach().float().reshape(()).to(self._first.device)
        bad = ~torch.isfinite(loss) & (self._first[0] == NO_STEP)
        new = torch.stack([torch.full_like(loss, float(step)), loss, torch.full_like(loss, float(learning_rate))])
        self._first = torch.where(bad, new, self._first)

    def first_nonfinite(
        self, gather: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[int, float, float] | None:
        """``(step, loss, learning rate)`` of the earliest non-finite loss on any process (``gather`` concatenates
        over the processes; every process must call it), or None."""
        rows = (gather(self._first) if gather is not None else self._first).reshape(-1, 3).cpu()
        step, loss, lr = rows[torch.argmin(rows[:, 0])].tolist()
        return None if step == NO_STEP else (int(step), loss, lr)

    def check(self, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Raise :class:`TrainingDiverged` (on every process: they gather the same rows) after a non-finite loss."""
        found = self.first_nonfinite(gather)
        if found is None:
            return
        step, loss, learning_rate = found
        lr = f" (learning rate {learning_rate:.3g})" if math.isfinite(learning_rate) else ""
        raise TrainingDiverged(
            f"training diverged: the loss is {loss} at step {step}{lr}; training stopped, and no checkpoint or final "
            f"model was saved after it; {LIKELY_CAUSE}"
        )
