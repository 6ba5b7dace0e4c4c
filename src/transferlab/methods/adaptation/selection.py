"""Choosing the checkpoint of an adaptation run without target labels.

Every epoch, the model embeds the source validation set and (a seeded sample of) the unlabeled target data, and
each scorer rates it; higher is better for all of them:

- ``source-accuracy``: accuracy on the source validation set.
- ``iwv``: importance-weighted validation (Sugiyama et al., JMLR 2007): source validation accuracy with every
  example weighted by the density ratio ``w(x) = p_T(x) / p_S(x)``, estimated by a logistic-regression domain
  classifier on the features (out-of-fold predictions, so no example scores its own fit). The history logs the
  weights' effective sample size (``report_importance_ess``): when it is a handful of examples, IWV and DEV rest on
  those few.
- ``dev``: deep embedded validation (You et al., ICML 2019): the importance-weighted validation loss with the
  control variate ``eta = -Cov(w L, w) / Var(w)``: ``risk = mean(w L) + eta mean(w) - eta``; score ``-risk``.
- ``entropy``: minus the mean prediction entropy on the target (Morerio et al., ICLR 2018).
- ``snd``: soft neighbourhood density (Saito et al., ICCV 2021): the mean entropy of each target prediction's
  softmax similarity (temperature 0.05) to the other target predictions.
- ``oracle``: target accuracy. It reads target labels, so it is never a default, and runs that use it are labelled
  oracle everywhere.

The default is ``source-accuracy``, chosen by measurement (docs/benchmarks.md, MNIST <-> USPS, three seeds). In a
short grid (eight methods, 900 steps) its pick was closest to the best checkpoint in hindsight in both directions
(mean gap 0.5 and 2.5 points), ahead of ``entropy`` (1.6 / 3.1), ``dev`` (2.5 / 5.6), ``snd`` and ``iwv``; in a
longer one (five methods, 5,000 steps) every scorer but ``iwv`` was within about a point on average (source
accuracy 0.7 / 1.1, entropy 0.5 / 0.7, worst cases 3.7-5.3 for both), and entropy rewards confidently collapsed
predictions. The importance-weighted scorers degrade when a domain classifier separates the domains easily, as it
does for digits: the density ratios concentrate on a few source examples. This matches large benchmarks of
validators (Musgrave et al., ECCV 2022; Ericsson et al., ICML 2023), where source accuracy is a strong baseline that
the importance-weighted ones rarely beat. With ``--selection-all-scorers`` every scorer is logged
each epoch, so another choice can be compared after the fact (otherwise the importance-weighted ones, which fit a
domain classifier every epoch, run only when selected).

Collapsed epochs rank last, for every label-free scorer. An epoch is collapsed when it puts nearly all target
predictions (>= 90 %) into one class that holds at least 30 points less of the source labels: the failure of
adversarial methods that no source-side score can see (DANN on movie -> tweet sentiment kept a checkpoint with 98 %
of the tweets in one class, at 34 % target accuracy against 70 % for its best epoch; docs/benchmarks.md). The check
reads only predictions and source labels. When every epoch is collapsed, the scorer's best one is kept and the run
warns.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from transferlab.data.image_data import ImageData
from transferlab.data.torch_dataset import make_dataset
from transferlab.engine.distributed import make_loader
from transferlab.engine.inference import predict_logits
from transferlab.engine.loop import TrainSettings
from transferlab.methods.adaptation.losses import entropy

__all__ = ["SCORERS", "DEFAULT_SCORER", "IMPORTANCE_WEIGHTED", "AdaptationValidation", "importance_weights",
           "dev_risk", "snd_score", "effective_sample_size", "collapsed", "ranked_score", "pick_epoch"]

# label-free checkpoint scorers, and the oracle (reads target labels; reported as such)
SCORERS = ("source-accuracy", "dev", "iwv", "entropy", "snd", "oracle")
DEFAULT_SCORER = "source-accuracy"

COLLAPSE_SHARE = 0.9  # target predictions in one class at or above this share ...
COLLAPSE_MARGIN = 0.3  # ... and this much above the class's share of the source labels: a collapsed epoch
COLLAPSE_PENALTY = 1e6  # subtracted from a collapsed epoch's label-free score: it ranks below every other epoch


def collapsed(target_share: float, source_share: float) -> bool:
    """Label-free sign of a collapsed adaptation: nearly all target predictions in one class that the source labels
    do not favour that much."""
    return target_share >= COLLAPSE_SHARE and target_share - source_share >= COLLAPSE_MARGIN


def ranked_score(row: dict, key: str) -> float:
    """``row[key]`` (NaN when missing) for ranking epochs: minus `COLLAPSE_PENALTY` when the epoch collapsed, unless
    ``key`` reads target labels. The loop's ``val_score`` and `pick_epoch` both rank by it."""
    penalise = key not in ("val_oracle", "report_target_accuracy") and row.get("report_collapsed")
    return row.get(key, float("nan")) - (COLLAPSE_PENALTY if penalise else 0.0)


def pick_epoch(history: list[dict], key: str) -> int | None:
    """Index of the epoch with the highest `ranked_score` for ``key`` (collapsed epochs last); ``None`` when no
    epoch has the key."""
    values = [ranked_score(row, key) for row in history]
    if not values or all(np.isnan(v) for v in values):
        return None
    return int(np.nanargmax(values))


DOMAIN_CLASSIFIER_C = 0.01  # strong L2: smooth density ratios (see `importance_weights`)
DOMAIN_CLASSIFIER_FOLDS = 3


def importance_weights(source_features: np.ndarray, target_features: np.ndarray, seed: int = 0) -> np.ndarray:
    """Density ratios ``p_T(x) / p_S(x)`` at the source examples, ``(N_s,)``, from a domain classifier
    (standardised features, L2 logistic regression with C = 0.01, 3-fold out-of-fold probabilities), scaled by
    ``N_s / N_t``.

    The strong regularisation keeps the ratios usable when the domains are nearly separable: on LeNet features of
    MNIST vs USPS, C = 1 put nearly all the weight on 7 of 3,000 source examples (effective sample size, see
    `effective_sample_size`) against 365-495 with C = 0.01, and its 5-fold fit took 5.4 s against 2.3 s.
    """
    folds = min(DOMAIN_CLASSIFIER_FOLDS, len(source_features), len(target_features))
    if folds < 2:  # too few examples to fit and score out of fold: no evidence of a shift
        return np.ones(len(source_features))
    features = np.concatenate([source_features, target_features])
    domains = np.concatenate([np.zeros(len(source_features)), np.ones(len(target_features))])
    classifier = make_pipeline(StandardScaler(),
                               LogisticRegression(C=DOMAIN_CLASSIFIER_C, max_iter=500, random_state=seed))
    target_probability = cross_val_predict(classifier, features, domains, cv=folds, method="predict_proba")[:, 1]
    p = np.clip(target_probability[: len(source_features)], 1e-4, 1 - 1e-4)
    return p / (1 - p) * len(source_features) / len(target_features)


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``: how many source examples the weighted scores rest on."""
    return float(weights.sum() ** 2 / max(float((weights**2).sum()), 1e-12))


def dev_risk(weights: np.ndarray, losses: np.ndarray) -> float:
    """Deep embedded validation risk: ``mean(w L) + eta mean(w) - eta`` with ``eta = -Cov(w L, w) / Var(w)``."""
    weighted = weights * losses
    variance = np.var(weights, ddof=1)
    eta = -np.cov(weighted, weights)[0, 1] / variance if variance > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def snd_score(target_probabilities: torch.Tensor, temperature: float = 0.05) -> float:
    """Soft neighbourhood density of target predictions ``(N, C)``: higher means denser, more consistent clusters."""
    normalised = torch.nn.functional.normalize(target_probabilities.float(), dim=1)
    similarity = normalised @ normalised.T
    similarity.fill_diagonal_(float("-inf"))
    neighbours = torch.softmax(similarity / temperature, dim=1)
    return float(entropy(neighbours).mean())


IMPORTANCE_WEIGHTED = ("iwv", "dev")  # the scorers that fit a domain classifier every epoch


class AdaptationValidation:
    """Per-epoch scorers for the loop: ``evaluate(model, settings)`` returns ``val_<scorer>`` for the scorers it
    runs, ``val_score`` (the selected scorer's value) and, when the target data has labels,
    ``report_target_accuracy`` (for reporting the selection gap; it selects only when the scorer is ``oracle``).

    Source accuracy, entropy, SND and the collapse check read the predictions and cost little beyond the two
    forward passes. The importance-weighted scorers (`IMPORTANCE_WEIGHTED`) fit a domain classifier every epoch,
    the largest share of a validation on small models (LeNet on MNIST -> USPS: about a third); they run when one of
    them is the selected scorer or when ``all_scorers`` asks for every scorer's pick (to compare scorers afterwards).
    The datasets are built once, so in-memory images keep their preprocessed tensors from epoch to epoch
    (`transferlab.data.torch_dataset.ImageDataset`).

    Args:
        source_val: labeled source validation data.
        target: target data (its labels, if any, are used only as described above).
        scorer: one of `SCORERS`.
        max_target: score on at most this many target examples (a seeded sample).
        all_scorers: run the importance-weighted scorers even when another scorer selects.
    """

    def __init__(self, source_val: ImageData, target: ImageData, scorer: str, *, max_target: int = 2000, seed: int = 0,
                 all_scorers: bool = False):
        self.source_val = source_val
        if len(target) > max_target:
            target = target.subset(np.sort(np.random.default_rng(seed).choice(len(target), max_target, replace=False)))
        self.target = target
        self.scorer = scorer
        self.seed = seed
        self.importance_weighted = all_scorers or scorer in IMPORTANCE_WEIGHTED
        self._datasets: dict[int, object] = {}

    def _dataset(self, data: ImageData, preprocess):
        """The dataset of ``data`` (``source_val`` or ``target``), built on first use and kept."""
        if id(data) not in self._datasets:
            self._datasets[id(data)] = make_dataset(data, preprocess)
        return self._datasets[id(data)]

    def _outputs(self, model, data: ImageData, settings: TrainSettings) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loader = make_loader(self._dataset(data, model.preprocess), batch_size=settings.batch_size * 2, shuffle=False,
                             num_workers=settings.num_workers)
        features, labels = predict_logits(model.backbone, loader, settings.precision, settings.device)
        with torch.inference_mode():
            logits = model.head.to(settings.device)(features.to(settings.device)).float().cpu()
        return features, logits, labels

    def evaluate(self, model, settings: TrainSettings) -> dict[str, float]:
        model.eval()
        source_features, source_logits, source_labels = self._outputs(model, self.source_val, settings)
        target_features, target_logits, target_labels = self._outputs(model, self.target, settings)
        correct = (source_logits.argmax(1) == source_labels).float().numpy()
        losses = torch.nn.functional.cross_entropy(source_logits, source_labels, reduction="none").numpy()
        target_probabilities = torch.softmax(target_logits, dim=1)
        row = {
            "val_loss": float(losses.mean()),
            "val_accuracy": float(correct.mean()),
            "val_source-accuracy": float(correct.mean()),
            "val_entropy": -float(entropy(target_probabilities).mean()),
            "val_snd": snd_score(target_probabilities),
        }
        if self.importance_weighted:
            weights = importance_weights(source_features.numpy(), target_features.numpy(), self.seed)
            row["val_iwv"] = float(np.mean(weights * correct))
            row["val_dev"] = -dev_risk(weights, losses)
            row["report_importance_ess"] = effective_sample_size(weights)
        # label-free collapse check: the largest share of target predictions in one class, next to that class's
        # share of the source labels (adversarial methods can push every target example into one class)
        shares = torch.bincount(target_logits.argmax(1), minlength=target_logits.shape[1]).float() / len(target_logits)
        top = int(shares.argmax())
        row["report_target_top_class_share"] = float(shares[top])
        row["report_source_share_of_that_class"] = float((source_labels == top).float().mean())
        row["report_collapsed"] = float(collapsed(row["report_target_top_class_share"],
                                                  row["report_source_share_of_that_class"]))
        known = target_labels >= 0  # target examples of classes the source has (labels only for reporting)
        if bool(known.any()):
            accuracy = float((target_logits.argmax(1)[known] == target_labels[known]).float().mean())
            row["report_target_accuracy"] = row["val_oracle"] = accuracy
        row["val_score"] = ranked_score(row, f"val_{self.scorer}")
        return row
