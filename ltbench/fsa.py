"""Feature space augmentation for long-tailed data (FSA; Chu, Bian, Liu and Ling, ECCV 2020), docs/methods.md §8.

Phase I is a normally trained network (the CE baseline, a ``joint`` run).
Phase II freezes its feature extractor and fine-tunes only the classifier on real features plus
augmented tail-class features built in feature space:

* Class activation map of class ``c`` on the last feature map ``f [K, H, W]`` (before pooling),
  min-max normalised to [0, 1] per map::

      M_c(x, y) = sum_k w_ck f_k(x, y),   M_c <- (M_c - min M_c) / (max M_c - min M_c)

* Decomposition with the sample's own class ``c``: class-specific features
  ``f * [M_c >= tau_s]``, class-generic features ``f * [M_c <= tau_g]`` (the rest zeroed);
  ``0 < tau_g <= tau_s < 1``, defaults 0.8 / 0.2 (the paper gives no values).
* Head/tail: classes sorted by size; head = the smallest set of largest classes holding at least
  90% of the training samples; the rest are tail classes.
* Confusing classes of tail class ``t``: the other classes ranked by the mean Phase-I softmax
  score ``S[t, j] = mean_{i: y_i = t} p_ij`` over the training set; keep the top ``N_f = 3``.
* Online mixing: for each real tail sample draw ``N_a = 3`` samples of its confusing classes and
  ``gamma ~ U(0, 1)``; position by position the new map takes the tail sample's class-specific
  features with probability ``gamma``, else the other sample's class-generic features; its label
  is the tail sample's class.

Implementation choices (documented here, shown in notebook 06):

* CAMs use the Phase-I classifier weights (a frozen copy), so the decomposition does not drift
  while the classifier is fine-tuned; the bias is left out (min-max normalisation removes it).
* The class-generic features of the partner samples come from a bank computed once with the
  frozen backbone (eval mode) on the un-augmented training images; the tail sample's own
  features come from the augmented real batch. Phase II is therefore one frozen forward pass per
  real batch plus cheap tensor ops.
* Shapes stay fixed (no host synchronisation): every real sample gets ``N_a`` mixed maps and
  those of non-tail samples get weight 0. The loss is the mean CE over the real samples and the
  valid (tail) mixed samples.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_finished
from .config import TrainConfig
from .data import DeviceDataset
from .engine import CHECKPOINT_FILE, Trainer
from .models import build_model, get_classifier

__all__ = [
    "DEFAULT_TAU_S", "DEFAULT_TAU_G", "check_thresholds", "check_head_fraction", "check_n_f", "check_fsa_params",
    "check_phase2_config", "normalize_maps", "class_activation_maps",
    "Decomposition", "decompose", "split_head_tail", "confusion_scores", "confusing_classes",
    "mix_features", "extract_features", "AugmentedBatch", "FeatureAugmenter", "build_augmenter",
    "load_phase1", "phase1_model", "phase2_config", "FSATrainer",
]

DEFAULT_TAU_S = 0.8
DEFAULT_TAU_G = 0.2
HEAD_FRACTION = 0.9
PathLike = Union[str, Path]


# --------------------------------------------------------------------------- validation


def _real(name: str, value: Any, valid: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number {valid}, got {name}={value!r}")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {name}={value!r}")
    return value


def check_thresholds(tau_s: float = DEFAULT_TAU_S, tau_g: float = DEFAULT_TAU_G) -> Tuple[float, float]:
    """Validate the decomposition thresholds: ``0 < tau_g <= tau_s < 1`` (docs/methods.md §8)."""
    s = _real("tau_s", tau_s, "in (0, 1) with tau_g <= tau_s")
    g = _real("tau_g", tau_g, "in (0, 1) with tau_g <= tau_s")
    if not 0.0 < g <= s < 1.0:
        raise ValueError(
            f"FSA thresholds must satisfy 0 < tau_g <= tau_s < 1 (docs/methods.md §8), got tau_s={tau_s!r}, tau_g={tau_g!r}")
    return s, g


def check_head_fraction(head_fraction: float = HEAD_FRACTION) -> float:
    """Validate the head/tail split's sample fraction: a real number in (0, 1] (docs/methods.md §8 uses 0.9)."""
    f = _real("head_fraction", head_fraction, "in (0, 1]")
    if not 0.0 < f <= 1.0:
        raise ValueError(f"head_fraction must be in (0, 1], got head_fraction={head_fraction!r}")
    return f


def check_n_f(n_f: int, num_classes: Optional[int] = None) -> int:
    """Validate the number of confusing classes: a positive int, at most ``num_classes - 1`` (a
    class is never its own confusing class; docs/methods.md §8 uses 3)."""
    _positive_int("n_f", n_f)
    if num_classes is not None and n_f > num_classes - 1:
        raise ValueError(f"n_f must be a positive int <= num_classes - 1 = {num_classes - 1} (the other classes "
                         f"of the {num_classes}-class Phase-I model), got n_f={n_f!r}")
    return n_f


def check_fsa_params(
    tau_s: float = DEFAULT_TAU_S,
    tau_g: float = DEFAULT_TAU_G,
    n_f: int = 3,
    n_a: int = 3,
    head_fraction: float = HEAD_FRACTION,
    num_classes: Optional[int] = None,
) -> None:
    """Validate every FSA hyperparameter of docs/methods.md §8 at once (``n_f`` against ``num_classes`` when
    given), so callers can reject a bad one before loading data or touching a run folder."""
    check_thresholds(tau_s, tau_g)
    check_n_f(n_f, num_classes)
    _positive_int("n_a", n_a)
    check_head_fraction(head_fraction)


# --------------------------------------------------------------------------- CAMs and decomposition


def normalize_maps(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Min-max normalise each map over its last two (spatial) dims to [0, 1].

    A constant map has no spatial information and becomes all zeros.
    """
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo).clamp_min(eps)


def class_activation_maps(
    feature_map: Tensor, weight: Tensor, classes: Optional[Tensor] = None, normalize: bool = True
) -> Tensor:
    """CAMs ``M_c(x, y) = sum_k w_ck f_k(x, y)`` (Zhou et al. 2016; FSA eq. 1; docs/methods.md §8).

    ``feature_map [N, K, H, W]`` is the last feature map before pooling, ``weight [C, K]`` the
    linear classifier's weight. With ``classes [N]`` the map of each sample's class ``[N, H, W]``
    is returned, else every class ``[N, C, H, W]``. ``normalize`` min-max scales each map to [0, 1].
    """
    if feature_map.ndim != 4:
        raise ValueError(f"feature_map must be [N, K, H, W], got shape {tuple(feature_map.shape)}")
    if weight.ndim != 2 or weight.shape[1] != feature_map.shape[1]:
        raise ValueError(f"weight must be [C, K={feature_map.shape[1]}], got shape {tuple(weight.shape)}")
    f = feature_map.float()
    w = weight.detach().float()
    if classes is None:
        cams = torch.einsum("nkhw,ck->nchw", f, w)
    else:
        if classes.shape != feature_map.shape[:1]:
            raise ValueError(f"classes must be [N={feature_map.shape[0]}], got shape {tuple(classes.shape)}")
        cams = torch.einsum("nkhw,nk->nhw", f, w[classes])
    return normalize_maps(cams) if normalize else cams


class Decomposition(NamedTuple):
    """Class-specific / class-generic parts of feature maps and their spatial masks."""

    specific: Tensor  # [N, K, H, W], zero where M < tau_s
    generic: Tensor  # [N, K, H, W], zero where M > tau_g
    specific_mask: Tensor  # [N, H, W] bool, M >= tau_s
    generic_mask: Tensor  # [N, H, W] bool, M <= tau_g


def decompose(
    feature_map: Tensor, cam: Tensor, tau_s: float = DEFAULT_TAU_S, tau_g: float = DEFAULT_TAU_G
) -> Decomposition:
    """Split ``feature_map [N, K, H, W]`` by its normalised CAM ``[N, H, W]`` (docs/methods.md §8):
    class-specific where ``M >= tau_s``, class-generic where ``M <= tau_g``.

    Both comparisons are inclusive and docs/methods.md §8 only forbids ``tau_g > tau_s``, so with
    ``tau_s == tau_g`` a position whose CAM equals the threshold exactly belongs to *both* parts
    (it is kept in ``specific`` and in ``generic``); with ``tau_g < tau_s`` the parts are disjoint.
    """
    tau_s, tau_g = check_thresholds(tau_s, tau_g)
    if cam.shape != feature_map.shape[:1] + feature_map.shape[2:]:
        raise ValueError(f"cam must be [N, H, W] = {tuple(feature_map.shape[:1] + feature_map.shape[2:])}, "
                         f"got {tuple(cam.shape)}")
    s_mask, g_mask = cam >= tau_s, cam <= tau_g
    return Decomposition(feature_map * s_mask[:, None], feature_map * g_mask[:, None], s_mask, g_mask)


# --------------------------------------------------------------------------- head/tail and confusing classes


def split_head_tail(counts: Sequence[int], head_fraction: float = HEAD_FRACTION) -> Tuple[List[int], List[int]]:
    """``(head, tail)`` class lists, each ordered by decreasing size (ties: lower index first).

    Head = the smallest set of largest classes holding at least ``head_fraction`` (90%, docs/methods.md §8)
    of the training samples; every other class is a tail class. Exact rational arithmetic, so a
    class that brings the total to exactly 90% closes the head.
    """
    counts = [int(c) for c in counts]
    if not counts or any(c < 0 for c in counts) or sum(counts) == 0:
        raise ValueError(f"counts must be non-negative with a positive total, got {counts!r}")
    frac = Fraction(check_head_fraction(head_fraction)).limit_denominator(10**9)
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    total, cum = sum(counts), 0
    for i, c in enumerate(order):
        cum += counts[c]
        if cum * frac.denominator >= frac.numerator * total:
            return order[: i + 1], order[i + 1:]
    return order, []  # pragma: no cover - the loop always closes at the full total


def confusion_scores(probs: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``S [C, C]`` with ``S[t, j] = mean_{i: y_i = t} p_ij``: the mean softmax score that samples
    of class ``t`` give class ``j`` (rows of absent classes are 0). docs/methods.md §8."""
    if probs.ndim != 2 or probs.shape[1] != num_classes or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs must be [N, C={num_classes}] and labels [N], got {tuple(probs.shape)} "
                         f"and {tuple(labels.shape)}")
    p = probs.detach().float()
    sums = torch.zeros(num_classes, num_classes, device=p.device).index_add_(0, labels, p)
    n = torch.zeros(num_classes, device=p.device).index_add_(0, labels, torch.ones_like(labels, dtype=p.dtype))
    return sums / n.clamp_min(1)[:, None]


def confusing_classes(scores: Tensor, n_f: int = 3) -> Tensor:
    """``[C, n_f]`` LongTensor: for each class ``t`` the other classes with the largest
    ``scores[t, j]``, best first (ties: lower class index first). docs/methods.md §8 keeps ``N_f = 3``."""
    c = scores.shape[0]
    if scores.shape != (c, c):
        raise ValueError(f"scores must be square [C, C], got {tuple(scores.shape)}")
    check_n_f(n_f, c)
    s = scores.detach().float().clone()
    s.fill_diagonal_(-math.inf)
    return torch.sort(s, dim=1, descending=True, stable=True).indices[:, :n_f]


# --------------------------------------------------------------------------- online mixing


def mix_features(
    specific: Tensor, generic: Tensor, gamma: Tensor, generator: Optional[torch.Generator] = None,
    u: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Mix position by position (docs/methods.md §8): ``source ~ Bernoulli(gamma)`` per spatial position;
    the result takes ``specific`` where ``source`` else ``generic``.

    ``specific, generic [M, K, H, W]``, ``gamma [M]``. Returns ``(mixed [M, K, H, W], source
    [M, H, W] bool)``; ``source`` is True where the position came from ``specific``. ``u``: the
    uniform draws ``[M, H, W]`` to use instead of drawing them from ``generator``.
    """
    if specific.shape != generic.shape or specific.ndim != 4 or gamma.shape != specific.shape[:1]:
        raise ValueError(f"specific and generic must be equal [M, K, H, W] and gamma [M], got "
                         f"{tuple(specific.shape)}, {tuple(generic.shape)}, {tuple(gamma.shape)}")
    m, _, h, w = specific.shape
    if u is None:
        u = torch.rand(m, h, w, device=specific.device, generator=generator)
    source = u < gamma.to(u.dtype)[:, None, None]
    return torch.where(source[:, None], specific, generic), source


@torch.no_grad()
def extract_features(
    model: nn.Module, dataset: DeviceDataset, batch_size: int = 500, autocast_dtype: Optional[torch.dtype] = None
) -> Tuple[Tensor, Tensor, Tensor]:
    """``(feature maps [N, K, H, W] float32, logits [N, C], labels [N])`` of the whole
    ``dataset`` (un-augmented, in order) with ``model`` in eval mode; the mode is restored."""
    was_training = model.training
    model.eval()
    feats, logits, labels = [], [], []
    dev = dataset.device
    try:
        for x, y in dataset.iterate(batch_size):
            amp = torch.autocast(dev.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
            with amp:
                f = model.forward_features(x)
                z = model.forward_head(f)
            feats.append(f.float().contiguous())
            logits.append(z.float())
            labels.append(y)
    finally:
        model.train(was_training)
    return torch.cat(feats), torch.cat(logits), torch.cat(labels)


class AugmentedBatch(NamedTuple):
    """Mixed feature maps of one real batch: ``N_a`` per real sample, in order (sample-major)."""

    features: Tensor  # [B * N_a, K, H, W]
    labels: Tensor  # [B * N_a], the real (tail) sample's class
    valid: Tensor  # [B * N_a] bool, True for maps of tail samples (the others get weight 0)
    source: Tensor  # [B * N_a, H, W] bool, True where the tail sample's specific features were taken
    gamma: Tensor  # [B * N_a]
    partner: Tensor  # [B * N_a] bank index of the confusing-class sample
    partner_class: Tensor  # [B * N_a]


@dataclass
class FeatureAugmenter:
    """Everything online mixing needs, as tensors on the device (docs/methods.md §8).

    ``generic_bank [N, K, H, W]`` holds the class-generic features of every training sample
    (frozen Phase-I backbone, its own class's CAM); ``confusing [C, N_f]`` the confusing classes;
    ``is_tail [C]`` the tail classes; ``cam_weight [C, K]`` the Phase-I classifier weight.
    """

    generic_bank: Tensor
    bank_labels: Tensor
    confusing: Tensor
    is_tail: Tensor
    cam_weight: Tensor
    tau_s: float = DEFAULT_TAU_S
    tau_g: float = DEFAULT_TAU_G
    n_a: int = 3
    scores: Optional[Tensor] = None  # [C, C] confusion scores (for plots)

    def __post_init__(self) -> None:
        self.tau_s, self.tau_g = check_thresholds(self.tau_s, self.tau_g)
        _positive_int("n_a", self.n_a)
        c = self.is_tail.shape[0]
        counts = torch.bincount(self.bank_labels, minlength=c)
        used = self.confusing[self.is_tail].flatten()
        if used.numel() and bool((counts[used] == 0).any()):
            raise ValueError("a confusing class of a tail class has no sample in the feature bank")
        self.class_counts = counts
        self.by_class = torch.argsort(self.bank_labels, stable=True)
        self.offsets = torch.cumsum(counts, 0) - counts

    @property
    def n_f(self) -> int:
        return self.confusing.shape[1]

    def specific(self, feature_map: Tensor, labels: Tensor) -> Decomposition:
        """Decomposition of ``feature_map`` with each sample's own class's CAM."""
        cam = class_activation_maps(feature_map, self.cam_weight, labels)
        return decompose(feature_map, cam, self.tau_s, self.tau_g)

    def augment(self, feature_map: Tensor, labels: Tensor, generator: Optional[torch.Generator] = None) -> AugmentedBatch:
        """``N_a`` mixed maps per real sample, vectorised, without host synchronisation.

        For sample ``i`` and draw ``a``: a confusing class ``c`` uniform among the ``N_f`` of
        ``y_i``, a uniform sample of ``c`` from the bank, ``gamma ~ U(0, 1)``, then
        :func:`mix_features` of ``i``'s class-specific and the partner's class-generic features.
        """
        dev = feature_map.device
        b, n_a = labels.shape[0], self.n_a
        rows = torch.arange(b, device=dev).repeat_interleave(n_a)
        y = labels[rows]
        pick = torch.randint(0, self.n_f, (b * n_a,), device=dev, generator=generator)
        cls = self.confusing[y, pick]
        n_c = self.class_counts[cls]
        u = torch.rand(b * n_a, device=dev, generator=generator)
        within = torch.minimum((u * n_c).floor().long(), (n_c - 1).clamp_min(0))
        partner = self.by_class[self.offsets[cls] + within]
        gamma = torch.rand(b * n_a, device=dev, generator=generator)
        specific = self.specific(feature_map.float(), labels).specific[rows]
        mixed, source = mix_features(specific, self.generic_bank[partner].float(), gamma, generator)
        return AugmentedBatch(mixed, y, self.is_tail[y], source, gamma, partner, cls)


@torch.no_grad()
def build_augmenter(
    model: nn.Module,
    dataset: DeviceDataset,
    counts: Sequence[int],
    tau_s: float = DEFAULT_TAU_S,
    tau_g: float = DEFAULT_TAU_G,
    n_f: int = 3,
    n_a: int = 3,
    head_fraction: float = HEAD_FRACTION,
    batch_size: int = 500,
    bank_dtype: torch.dtype = torch.float32,
) -> FeatureAugmenter:
    """Run the Phase-I ``model`` once over the training ``dataset`` and build the augmenter:
    confusion scores, confusing classes, head/tail split and the class-generic feature bank."""
    tau_s, tau_g = check_thresholds(tau_s, tau_g)
    c = len(counts)
    feats, logits, labels = extract_features(model, dataset, batch_size)
    weight = get_classifier(model).weight.detach().float().clone()
    scores = confusion_scores(logits.softmax(dim=1), labels, c)
    _, tail = split_head_tail(counts, head_fraction)
    is_tail = torch.zeros(c, dtype=torch.bool, device=feats.device)
    is_tail[tail] = True
    for s in range(0, len(labels), batch_size):  # in place and chunked: one copy of the features at most
        part = feats[s:s + batch_size]
        cam = class_activation_maps(part, weight, labels[s:s + batch_size])
        part.copy_(decompose(part, cam, tau_s, tau_g).generic)
    bank = feats.to(bank_dtype)
    return FeatureAugmenter(bank, labels, confusing_classes(scores, n_f), is_tail, weight, tau_s, tau_g, n_a, scores)


# --------------------------------------------------------------------------- phase I checkpoint and phase II config


def load_phase1(phase1_dir: PathLike, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """The Phase-I ``checkpoint.pt`` of a finished whole-network run (config, model, counts)."""
    return load_finished(phase1_dir, "Phase-I", "pass the folder of a finished whole-network run (e.g. the CE "
                         "baseline; ltbench.runs.run(spec, store, require_weights=True))",
                         ("config", "model", "num_classes", "counts"), map_location)


def phase1_model(phase1_dir: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[nn.Module, TrainConfig]:
    """The Phase-I network of ``phase1_dir`` in eval mode on ``device``, and its TrainConfig
    (for plots: CAMs of test images, the augmenter on its training data)."""
    state = load_phase1(phase1_dir)
    cfg = TrainConfig.from_dict(state["config"])
    model = build_model(cfg.model, int(state["num_classes"]), classifier=cfg.classifier)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), cfg


def phase2_config(
    phase1: Union[TrainConfig, Mapping[str, Any]],
    iterations: int = 6400,
    lr: float = 0.001,
    batch_size: int = 128,
    evaluations: int = 10,
    **changes: Any,
) -> TrainConfig:
    """The Phase-II TrainConfig (docs/methods.md §8, CIFAR): CE, instance sampling, fixed ``lr`` 0.001,
    ``iterations`` steps of ``batch_size`` 128 (6,400 in the paper; shorten for quick profiles).

    The steps are split into ``epochs`` = the largest divisor of ``iterations`` that is at most
    ``evaluations`` (one test evaluation each); each epoch draws ``iterations / epochs * batch_size``
    samples (concatenated random permutations). ``changes`` override any other field (device ...).
    """
    _positive_int("iterations", iterations)
    _positive_int("evaluations", evaluations)
    base = phase1.to_dict() if isinstance(phase1, TrainConfig) else dict(phase1)
    epochs = max(d for d in range(1, min(evaluations, iterations) + 1) if iterations % d == 0)
    steps = iterations // epochs
    fields = dict(base, loss="ce", loss_params={}, sampler="instance",
                  sampler_params={"num_samples": steps * batch_size}, drw_epoch=None, drs_epoch=None,
                  epochs=epochs, batch_size=batch_size, lr=lr, schedule="constant", warmup_epochs=0,
                  drop_last=False, eval_every=1, checkpoint_every=epochs)
    fields.update(changes)
    return TrainConfig.from_dict(fields).validate()


#: TrainConfig fields that determine the training data; Phase I and Phase II must agree on them.
PHASE1_DATA_FIELDS = ("dataset", "imbalance_ratio", "lt_profile", "n_max", "data_seed", "data_options")


def check_phase2_config(cfg: TrainConfig, phase1: Mapping[str, Any], where: PathLike = "Phase I") -> None:
    """Reject a Phase-II ``cfg`` that cannot fine-tune the Phase-I checkpoint ``phase1`` (docs/methods.md §8),
    before any data is loaded: the loss must be plain CE without DRW, the model and classifier
    must match, and so must every field of :data:`PHASE1_DATA_FIELDS` (the bank, the confusion
    scores and the head/tail split are only meaningful on the data Phase I was trained on).
    """
    if cfg.loss != "ce" or cfg.drw_epoch is not None:
        raise ValueError(f"FSA phase II trains with plain CE (docs/methods.md §8): loss must be 'ce' and drw_epoch None, "
                         f"got loss={cfg.loss!r}, drw_epoch={cfg.drw_epoch!r}")
    p1 = phase1["config"]
    if p1.get("model") != cfg.model or p1.get("classifier") != cfg.classifier:
        raise ValueError(f"Phase-I checkpoint {where} is a {p1.get('model')!r}/{p1.get('classifier')!r} model "
                         f"but this run uses model={cfg.model!r}, classifier={cfg.classifier!r}")
    defaults = TrainConfig()  # a field missing from an older checkpoint had its default value then
    diff = [f"{name}: Phase I {p1.get(name, getattr(defaults, name))!r} vs Phase II {getattr(cfg, name)!r}"
            for name in PHASE1_DATA_FIELDS if p1.get(name, getattr(defaults, name)) != getattr(cfg, name)]
    if diff:
        raise ValueError(f"Phase-I checkpoint {where} was trained on other data than this Phase-II config "
                         f"({'; '.join(diff)}): use the same {', '.join(PHASE1_DATA_FIELDS)} "
                         "(phase2_config(phase1_config) copies them)")


# --------------------------------------------------------------------------- phase II trainer


class FSATrainer(Trainer):
    """Phase II of FSA through the engine (docs/methods.md §8): the Phase-I network is loaded from
    ``phase1_dir``, its feature extractor frozen in eval mode (BatchNorm running statistics
    untouched), and only the classifier is fine-tuned with CE on real plus augmented tail features.
    The head/tail split, the confusing classes and the confusion scores go to ``extras["fsa"]``.

    Build its run with :func:`ltbench.methods.fsa_spec` (the phase-I run is the spec's dependency
    ``phase1``; :func:`ltbench.runs.run` passes its folder as ``phase1_dir``).
    """

    #: A short stage on a frozen backbone: the compile time would not be repaid (not measured faster).
    COMPILE_AUTO = False

    def __init__(
        self,
        cfg: TrainConfig,
        phase1_dir: PathLike,
        tau_s: float = DEFAULT_TAU_S,
        tau_g: float = DEFAULT_TAU_G,
        n_f: int = 3,
        n_a: int = 3,
        head_fraction: float = HEAD_FRACTION,
        data: Any = None,
        progress: bool = True,
    ) -> None:
        check_fsa_params(tau_s, tau_g, n_f, n_a, head_fraction)
        self.tau_s, self.tau_g = check_thresholds(tau_s, tau_g)
        self.n_f, self.n_a, self.head_fraction = n_f, n_a, head_fraction
        self.phase1_dir = Path(phase1_dir)
        self._phase1 = load_phase1(self.phase1_dir)
        # Everything checkable from the configs is checked here, before the data is loaded and the
        # feature bank is built; build_model still compares the loaded data's classes and counts.
        check_n_f(n_f, int(self._phase1["num_classes"]))
        check_phase2_config(cfg, self._phase1, self.phase1_dir / CHECKPOINT_FILE)
        super().__init__(cfg, data=data, progress=progress)
        del self._phase1
        self.augmenter = build_augmenter(
            self.model, self.train_set, self.counts, self.tau_s, self.tau_g, n_f, n_a, head_fraction)
        self.head_classes, self.tail_classes = split_head_tail(self.counts, head_fraction)
        aug = self.augmenter
        self.extras["fsa"] = {  # saved with the checkpoint and in extras.json (notebook 06's plots)
            "tau_s": self.tau_s, "tau_g": self.tau_g, "n_f": n_f, "n_a": n_a, "head_fraction": head_fraction,
            "head": self.head_classes, "tail": self.tail_classes, "confusing": aug.confusing.cpu().tolist(),
            "scores": aug.scores.cpu().tolist() if aug.scores is not None else None,
        }

    def build_model(self) -> nn.Module:
        state, cfg = self._phase1, self.cfg
        where = self.phase1_dir / CHECKPOINT_FILE
        if state["num_classes"] != self.num_classes:
            raise ValueError(f"Phase-I checkpoint {where} has num_classes={state['num_classes']} but the data "
                             f"({cfg.dataset}) has {self.num_classes} classes")
        if list(state["counts"]) != list(self.counts):
            # The config fields already agree (__init__), so this is data passed in or a changed source.
            raise ValueError(f"Phase-I checkpoint {where} was trained on other data (class counts "
                             f"{list(state['counts'])[:5]}... vs {self.counts[:5]}...): use the same dataset, "
                             "imbalance ratio, n_max and data seed")
        model = build_model(cfg.model, self.num_classes, classifier=cfg.classifier)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ValueError(f"Phase-I checkpoint {where} does not fit model={cfg.model!r}: {exc}") from exc
        model.requires_grad_(False)
        get_classifier(model).requires_grad_(True)
        model.eval()
        return model

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.model.eval()  # frozen backbone: BatchNorm uses (and never updates) its running statistics

    #: The real feature maps and labels, the mixed maps, their labels and validity (``N_a`` rows
    #: per real sample, sample-major): all per sample.
    step_input_kinds = ("sample",) * 5

    def step_inputs(self, batch: Any, epoch: int, generator: torch.Generator) -> Tuple[Tensor, ...]:
        """``(f, y, mixed, mixed_y, valid)``: the frozen features of the augmented batch and its
        online mixing (FSA's augmentation is in feature space, so it belongs to the eager part)."""
        if self.model.training:
            self.model.eval()
        x, y = super().step_inputs(batch, epoch, generator)
        with torch.no_grad(), self.autocast():
            f = self.model.forward_features(x)
        f = f.float()
        aug = self.augmenter.augment(f, y, generator)
        return f, y, aug.features, aug.labels, aug.valid

    def step_loss(self, f: Tensor, y: Tensor, mixed: Tensor, mixed_y: Tensor, valid: Tensor, *,
                  mask: Optional[Tensor] = None) -> Tensor:
        """Mean CE of the classifier over the real samples and the valid (tail) mixed maps
        (docs/methods.md §8)."""
        feats = torch.cat([f, mixed])
        labels = torch.cat([y, mixed_y])
        real = torch.ones_like(y, dtype=torch.float32) if mask is None else mask
        weights = torch.cat([real, valid.float() * real.repeat_interleave(mixed.shape[0] // y.shape[0])])
        with self.autocast():
            logits = self.model.forward_head(feats)
        per_sample = F.cross_entropy(logits.float(), labels, reduction="none")
        return (per_sample * weights).sum() / weights.sum()
