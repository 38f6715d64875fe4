"""Online hard example mining (OHEM; Shrivastava, Gupta and Girshick, CVPR 2016), docs/methods.md §9.

Classification form (faithful, two passes): score every sample of the batch without gradients,
keep the ``k = round(keep_ratio * N)`` samples with the largest loss, then forward and backward
only those; the loss is the mean over the kept samples::

    K = top-k_i CE_i (no grad),   L = (1 / k) sum_{i in K} CE_i (second forward on x[K])

BatchNorm (docs/methods.md §9: statistics come from the kept samples, as in the paper's read-only /
trainable two-network design). The scoring pass runs the network in *training* mode, so its
losses are those the training network assigns (batch statistics of the whole batch), under
``torch.no_grad`` and with running-statistics tracking switched off on every BatchNorm layer
(:func:`frozen_bn_stats`): running mean / var and ``num_batches_tracked`` are untouched. The
second pass over the kept samples is an ordinary training forward, so the normalisation and the
running statistics come from the kept samples only.

Cheaper single-pass variant (labelled ``masked``): one training forward of the whole batch, the
per-sample losses masked to the top-k, ``L = sum_i m_i CE_i / k``. Same loss value and gradient
as the two-pass form for a network without batch-coupled layers; with BatchNorm the batch
statistics (and the running statistics) come from the whole batch instead of the kept samples.

Detection form (:func:`select_hard_rois`): per-RoI losses (classification + box regression),
optional per-image NMS over (box, loss) at IoU 0.7 so near-duplicate RoIs do not all count, then
the top ``B`` RoIs (B = 128 for 2 images) over the minibatch are back-propagated.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from .config import TrainConfig
from .engine import EXTRAS_FILE, Trainer

__all__ = [
    "MODES", "check_keep_ratio", "num_kept", "per_sample_ce", "frozen_bn_stats", "OHEMLoss",
    "ohem_two_pass", "ohem_masked", "OHEMTrainer", "mined_frame", "roi_losses", "select_hard_rois",
]

MODES = ("two_pass", "masked")


def check_keep_ratio(keep_ratio: Any) -> float:
    """``keep_ratio`` must be a real number in (0, 1] (docs/methods.md §9)."""
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < float(keep_ratio) <= 1.0:
        raise ValueError(f"keep_ratio must be a number in (0, 1], got keep_ratio={keep_ratio!r}")
    return float(keep_ratio)


def num_kept(n: int, keep_ratio: float) -> int:
    """``k = round(keep_ratio * n)`` (Python rounding), at least 1 for a non-empty batch."""
    return min(n, max(1, round(check_keep_ratio(keep_ratio) * n))) if n > 0 else 0


def per_sample_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """``CE_i = -log softmax(z_i)[y_i]`` in float32, shape ``[N]``."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Inside, BatchNorm layers in training mode normalise with the batch statistics but do not
    update ``running_mean`` / ``running_var`` / ``num_batches_tracked`` (``track_running_stats``
    is switched off, then restored)."""
    saved = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        for m, _ in saved:
            m.track_running_stats = False
        yield
    finally:
        for m, flag in saved:
            m.track_running_stats = flag


class OHEMLoss(NamedTuple):
    """Loss of one OHEM step and which samples of the batch were kept."""

    loss: Tensor  # scalar, mean CE over the kept samples
    kept: Tensor  # [k] indices into the batch, hardest first
    scores: Tensor  # [N] per-sample losses used for the ranking (detached)
    weight: Optional[Tensor] = None  # [k] 0/1: which kept samples count (padded batches); None: all


def _top_k(scores: Tensor, k: int, mask: Optional[Tensor] = None) -> Tensor:
    if mask is not None:  # a padded batch: padding is never hard
        scores = scores.masked_fill(mask == 0, float("-inf"))
    return torch.topk(scores, k, sorted=True).indices


def _mean(per: Tensor, weight: Optional[Tensor]) -> Tensor:
    return per.mean() if weight is None else (per * weight).sum() / weight.sum()


def ohem_two_pass(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    keep_ratio: float,
    model: Optional[nn.Module] = None,
    autocast: Optional[Callable[[], Any]] = None,
    mask: Optional[Tensor] = None,
    kept_mask: Optional[Tensor] = None,
) -> OHEMLoss:
    """The faithful form (docs/methods.md §9): score without gradients (training mode, BN running stats
    frozen via :func:`frozen_bn_stats` on ``model``), keep the top-k, forward and backward only
    those. ``forward`` maps images to logits (the model or its compiled version).

    A padded batch (:mod:`ltbench.fastpath`): ``mask [N]`` marks the real samples (only they are
    ranked), ``kept_mask [k]`` the first ``num_kept(n)`` of the ``k`` kept (only they count)."""
    amp = autocast or _no_autocast
    n = y.shape[0]
    k = num_kept(n, keep_ratio)
    if k == n:  # nothing to mine: an ordinary step (the scoring pass would change nothing)
        with amp():
            per = per_sample_ce(forward(x), y)
        return OHEMLoss(_mean(per, mask), torch.arange(n, device=y.device), per.detach(), mask)
    with torch.no_grad(), (frozen_bn_stats(model) if model is not None else _null()), amp():
        scores = per_sample_ce(forward(x), y)
    kept = _top_k(scores, k, mask)
    with amp():
        per = per_sample_ce(forward(x[kept]), y[kept])
    return OHEMLoss(_mean(per, kept_mask), kept, scores, kept_mask)


def ohem_masked(
    forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, keep_ratio: float,
    autocast: Optional[Callable[[], Any]] = None, mask: Optional[Tensor] = None,
    kept_mask: Optional[Tensor] = None,
) -> OHEMLoss:
    """The cheaper single-pass variant (labelled as such): one forward of the whole batch,
    ``L = sum_i m_i CE_i / k`` with ``m`` the top-k mask of the detached losses. BatchNorm sees
    the whole batch (unlike :func:`ohem_two_pass`). ``mask`` / ``kept_mask``: as there."""
    amp = autocast or _no_autocast
    n = y.shape[0]
    k = num_kept(n, keep_ratio)
    with amp():
        per = per_sample_ce(forward(x), y)
    scores = per.detach()
    kept = _top_k(scores, k, mask)
    if kept_mask is None:
        m = torch.zeros_like(per).index_fill_(0, kept, 1.0)
        return OHEMLoss((per * m).sum() / k, kept, scores)
    m = torch.zeros_like(per).scatter(0, kept, kept_mask.to(per.dtype))
    return OHEMLoss((per * m).sum() / kept_mask.sum(), kept, scores, kept_mask)


@contextmanager
def _null() -> Iterator[None]:
    yield


def _no_autocast() -> Any:
    return _null()


class OHEMTrainer(Trainer):
    """CE training with OHEM through the engine (docs/methods.md §9).

    ``keep_ratio`` in (0, 1]; ``mode`` ``"two_pass"`` (faithful) or ``"masked"`` (single pass).
    During an epoch it counts, on the device (no host synchronisation in the step), how many kept
    and how many seen samples come from each class; at the end of the epoch (one sync) they go to
    ``extras["ohem"]["mined"][epoch][c]`` / ``["seen"][epoch][c]`` (saved with the checkpoint and
    in ``extras.json``; :func:`mined_frame` turns them into a table) and ``kept_fraction`` to the
    per-epoch history.
    """

    @classmethod
    def check_arguments(cls, cfg: TrainConfig, keep_ratio: float = 0.5, mode: str = "two_pass",
                        **kwargs: Any) -> None:
        """``keep_ratio`` in (0, 1], ``mode`` in :data:`MODES`, per-sample CE without DRW (docs/methods.md §9)."""
        check_keep_ratio(keep_ratio)
        if mode not in MODES:
            raise ValueError(f"unknown OHEM mode: mode={mode!r}; valid: {', '.join(MODES)}")
        if cfg.loss != "ce" or cfg.drw_epoch is not None:
            raise ValueError(f"OHEM ranks and trains with per-sample CE (docs/methods.md §9); got loss={cfg.loss!r}, "
                             f"drw_epoch={cfg.drw_epoch!r}")
        super().check_arguments(cfg, **kwargs)

    def __init__(self, cfg: TrainConfig, keep_ratio: float = 0.5, mode: str = "two_pass", data: Any = None,
                 progress: bool = True) -> None:
        type(self).check_arguments(cfg, keep_ratio=keep_ratio, mode=mode)
        self.keep_ratio = check_keep_ratio(keep_ratio)
        self.mode = mode
        super().__init__(cfg, data=data, progress=progress)
        self._mined = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        self._seen = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        self._kept_masks: Dict[int, Tensor] = {}
        self.extras["ohem"] = self._record_template()

    def _record_template(self) -> Dict[str, Any]:
        return {"keep_ratio": self.keep_ratio, "mode": self.mode, "counts": list(self.counts), "mined": [], "seen": []}

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._mined.zero_()
        self._seen.zero_()

    #: The batch and the kept-sample mask of a full batch (the fast path's masked BatchNorm uses
    #: it for the two-pass form's second forward).
    step_input_kinds = ("sample", "sample", "mask")

    def step_inputs(self, batch: Any, epoch: int, generator: torch.Generator) -> Tuple[Tensor, ...]:
        """``(x, y, kept_mask)``: ``kept_mask [num_kept(B)]`` is 1 for the first ``num_kept(n)``
        kept samples of ``n`` real ones (used only on a padded batch)."""
        x, y = super().step_inputs(batch, epoch, generator)
        n = y.shape[0]
        if n not in self._kept_masks:  # one per batch size (an epoch has two at most)
            k_full = num_kept(self.local_batch_size, self.keep_ratio)
            self._kept_masks[n] = (torch.arange(k_full, device=y.device) < num_kept(n, self.keep_ratio)).float()
        return x, y, self._kept_masks[n]

    def step_loss(self, x: Tensor, y: Tensor, kept_mask: Tensor, *, mask: Optional[Tensor] = None) -> Tensor:
        """Mean CE of the kept samples (either form); counts seen and kept samples per class."""
        kept_mask = None if mask is None else kept_mask
        if self.mode == "two_pass":
            out = ohem_two_pass(self.forward, x, y, self.keep_ratio, model=self.model, autocast=self.autocast,
                                mask=mask, kept_mask=kept_mask)
        else:
            out = ohem_masked(self.forward, x, y, self.keep_ratio, autocast=self.autocast, mask=mask,
                              kept_mask=kept_mask)
        self._seen.index_add_(0, y, torch.ones_like(y) if mask is None else mask.long())
        y_kept = y[out.kept]
        self._mined.index_add_(0, y_kept, torch.ones_like(y_kept) if out.weight is None else out.weight.long())
        return out.loss

    def on_epoch_end(self, epoch: int, row: Dict[str, Any]) -> None:
        super().on_epoch_end(epoch, row)
        rec = self.extras["ohem"]
        mined, seen = self._mined.tolist(), self._seen.tolist()
        rec["mined"].append(mined)
        rec["seen"].append(seen)
        row["kept_fraction"] = sum(mined) / max(sum(seen), 1)

    def load_checkpoint(self, path: str | Path) -> None:
        super().load_checkpoint(path)
        rec = self.extras.get("ohem")
        if rec is None or rec.get("keep_ratio") != self.keep_ratio or rec.get("mode") != self.mode:
            got = None if rec is None else (rec.get("keep_ratio"), rec.get("mode"))
            raise ValueError(f"checkpoint {path} was written with another OHEM setting (keep_ratio, mode)={got}, "
                             f"not ({self.keep_ratio}, {self.mode!r}); delete it or use another out_dir")


def mined_frame(result: Any) -> "Any":
    """One row per (epoch, class) of an OHEM run: ``epoch`` (1-based), ``class``,
    ``train_count``, ``kept`` (mined hard examples) and ``seen`` (samples drawn). ``result`` is a
    :class:`~ltbench.engine.TrainResult` (its ``extras``) or a run folder."""
    import json

    import pandas as pd

    if isinstance(result, (str, Path)):
        path = Path(result) / EXTRAS_FILE
        if not path.exists():
            raise FileNotFoundError(f"no {EXTRAS_FILE} in {result}: is it a finished OHEMTrainer run?")
        extras = json.loads(path.read_text())
    else:
        extras = result.extras
    rec = extras.get("ohem")
    if rec is None:
        raise ValueError("no OHEM record in this result: was it trained with OHEMTrainer?")
    rows = [{"epoch": e + 1, "class": c, "train_count": rec["counts"][c], "kept": k, "seen": s}
            for e, (ks, ss) in enumerate(zip(rec["mined"], rec["seen"])) for c, (k, s) in enumerate(zip(ks, ss))]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- detection form


def roi_losses(
    cls_logits: Tensor, labels: Tensor, box_deltas: Optional[Tensor] = None, box_targets: Optional[Tensor] = None,
    beta: float = 1.0,
) -> Tensor:
    """Per-RoI loss (docs/methods.md §9, Fast R-CNN): ``CE(cls) + [label > 0] * smoothL1(deltas, targets)``
    summed over the 4 coordinates; label 0 is background (no box loss). Shape ``[R]``."""
    loss = per_sample_ce(cls_logits, labels)
    if box_deltas is not None:
        if box_targets is None or box_deltas.shape != box_targets.shape or box_deltas.shape[-1] != 4:
            raise ValueError("box_deltas and box_targets must both be [R, 4]")
        reg = F.smooth_l1_loss(box_deltas.float(), box_targets.float(), beta=beta, reduction="none").sum(dim=1)
        loss = loss + reg * (labels > 0).float()
    return loss


def select_hard_rois(
    losses: Tensor, boxes: Tensor, image_ids: Tensor, num_keep: int, nms_iou: Optional[float] = 0.7
) -> Tensor:
    """Indices of the RoIs to back-propagate, highest loss first (docs/methods.md §9).

    With ``nms_iou`` set, greedy per-image NMS over (box, loss)
    (:func:`torchvision.ops.batched_nms`) first drops every RoI overlapping an already kept
    higher-loss RoI of the same image with IoU above ``nms_iou``; then the ``num_keep`` RoIs with
    the largest loss over the whole minibatch are kept (B = 128 for 2 images in the paper).
    ``boxes`` are ``[R, 4]`` in (x1, y1, x2, y2).
    """
    from torchvision.ops import batched_nms

    r = losses.shape[0]
    if losses.ndim != 1 or boxes.shape != (r, 4) or image_ids.shape != (r,):
        raise ValueError(f"losses [R], boxes [R, 4] and image_ids [R] expected, got {tuple(losses.shape)}, "
                         f"{tuple(boxes.shape)}, {tuple(image_ids.shape)}")
    if isinstance(num_keep, bool) or not isinstance(num_keep, int) or num_keep < 0:
        raise ValueError(f"num_keep must be an int >= 0, got num_keep={num_keep!r}")
    if nms_iou is not None and (isinstance(nms_iou, bool) or not 0.0 < float(nms_iou) <= 1.0):
        raise ValueError(f"nms_iou must be in (0, 1] or None, got nms_iou={nms_iou!r}")
    scores = losses.detach().float()
    if nms_iou is None:
        order = torch.argsort(scores, descending=True, stable=True)
    else:
        order = batched_nms(boxes.detach().float(), scores, image_ids, float(nms_iou))  # sorted by score
    return order[:num_keep]
