"""2-D maps (t-SNE) of source and target embeddings before and after domain adaptation.

For a run trained on a labeled source and a target domain (its ``config.json`` names both), a bounded sample of
each domain is embedded twice: with the backbone as training started (the pretrained one, or a random
initialisation when the run did not start from pretrained weights) and with the run's trained backbone. Adaptation
that worked pulls the two domains' points together. The maps need the run's data to be readable where the report
is built; when it is not, the report says so instead.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from matplotlib.figure import Figure

from transferlab.api import load
from transferlab.embeddings import extract_features
from transferlab.errors import TransferlabError
from transferlab.methods import build_config
from transferlab.methods.finetune import build_backbone
from transferlab.methods.splits import load_spec
from transferlab.reporting.leaderboard import LeaderboardRow, budget_text
from transferlab.reporting.plots import Plot, slug, svg_of
from transferlab.reporting.runs import RunRecord

__all__ = ["PER_DOMAIN", "embedding_maps"]

log = logging.getLogger("transferlab")

PER_DOMAIN = 300  # examples drawn from each domain for a map


def embedding_maps(rows: list[LeaderboardRow], *, limit: int = 2, per_domain: int | None = None
                   ) -> tuple[list[Plot], list[str]]:
    """Maps for up to ``limit`` adaptation experiments (the first seed of each), of at most ``per_domain``
    examples per domain (default `PER_DOMAIN`); notes for those not drawn."""
    per_domain = per_domain or PER_DOMAIN
    plots, notes = [], []
    candidates = [(row, run) for row in rows for run in row.runs[:1] if _domains(run)]
    for row, run in candidates[:limit]:
        try:
            plots.append(_map(row, run, per_domain))
        except (TransferlabError, OSError, ValueError, RuntimeError) as exc:
            notes.append(f"no embedding map for {run.path}: its data or model could not be read here ({exc})")
    if len(candidates) > limit:
        notes.append(f"embedding maps drawn for {limit} of {len(candidates)} adaptation experiments")
    return plots, notes


def _domains(run: RunRecord) -> tuple[str, str] | None:
    source, target = run.config.get("source"), run.config.get("target")
    return (source, target) if isinstance(source, str) and isinstance(target, str) else None


def _map(row: LeaderboardRow, run: RunRecord, per_domain: int) -> Plot:
    settings = {key: value for key, value in run.config.items() if key not in ("resume", "overwrite")}
    config = build_config(saved=settings, source=str(run.path / "config.json"))
    source_spec, target_spec = _domains(run)
    rng = np.random.default_rng(run.seed or 0)
    domains = [_sample(load_spec(source_spec, config, ("train", "all"), "source"), per_domain, rng),
               _sample(load_spec(target_spec, config, ("train", "all"), "target"), per_domain, rng)]
    pretrained = bool(config.pretrained or config.weights is not None)
    torch.manual_seed(run.seed or 0)
    before = build_backbone(config, pretrained=pretrained).eval()
    after = load(run.path).backbone.eval()
    figure = Figure(figsize=(11, 4.8))
    panels = figure.subplots(1, 2)
    for axes, backbone, when in ((panels[0], before, "before adaptation"), (panels[1], after, "after adaptation")):
        features = [extract_features(backbone, data, precision="fp32", num_workers=0, use_cache=False,
                                     progress=False).numpy() for data in domains]
        mapped = _tsne(np.concatenate(features))
        split = len(features[0])
        axes.scatter(*mapped[:split].T, s=8, alpha=0.6, color="#1f77b4", label=f"source ({split})")
        axes.scatter(*mapped[split:].T, s=8, alpha=0.6, color="#ff7f0e", marker="x",
                     label=f"target ({len(mapped) - split})")
        axes.set_title(when + ("" if pretrained or when.startswith("after") else " (random initialisation)"))
        axes.set_xticks([])
        axes.set_yticks([])
        axes.legend(fontsize="small")
    what = f"{row.name} · {budget_text(row.labels_per_class)}"
    plot_id = f"plot-tsne-{slug(what)}"
    return Plot(plot_id, f"source and target embeddings: {what}", svg_of(figure, plot_id),
                f"t-SNE of {per_domain} or fewer examples per domain ({source_spec} -> {target_spec}), embedded by "
                f"the backbone as training started and by {run.path.name}'s trained backbone (seed {run.seed}).")


def _tsne(points: np.ndarray) -> np.ndarray:
    """``(N, D)`` features -> ``(N, 2)``: standardised, reduced to 30 principal components, then Barnes-Hut t-SNE
    (500 iterations) on one thread: its OpenMP threads slowed it some 20x on a busy 2-core machine."""
    from sklearn.decomposition import (
        PCA,  # imported here: only adaptation reports draw maps
    )
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    points = (points - points.mean(0)) / (points.std(0) + 1e-6)
    if points.shape[1] > 30 and len(points) > 30:
        points = PCA(30, random_state=0).fit_transform(points)
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=min(30.0, (len(points) - 1) / 3), init="pca", max_iter=500,
                    random_state=0).fit_transform(points)


def _sample(data, count: int, rng: np.random.Generator):
    if len(data) <= count:
        return data
    return data.subset(np.sort(rng.choice(len(data), size=count, replace=False)))
