"""``transferlab embed``: every example of a data spec as a vector of a frozen backbone, written to a directory.

The backbone is a registry name (pretrained weights, or ``weights`` from a local file) or a trained run directory
(its fine-tuned backbone). Embedding goes through `transferlab.embeddings.extract_features`, so its feature cache
is shared with ``features``: a rerun embeds only new or changed files.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferlab.artifacts import MODEL_JSON
from transferlab.backbones import create_backbone
from transferlab.backbones.base import Backbone
from transferlab.backbones.registry import DEFAULT_BACKBONES
from transferlab.data import Examples, load_splits
from transferlab.data.text_tables import TextColumns
from transferlab.data.torch_dataset import DATA_MODALITY
from transferlab.embeddings import backbone_fingerprint, extract_features
from transferlab.engine.distributed import init_from_environment, is_main_process, world_size
from transferlab.engine.onnx_features import choose_feature_engine
from transferlab.engine.precision import default_device, resolve_precision
from transferlab.errors import TransferlabError
from transferlab.models import load_predictor
from transferlab.rundir import claim_run_dir
from transferlab.unsupervised.embedding_set import EmbeddingSet
from transferlab.unsupervised.projection import Projection

__all__ = ["BackboneSource", "embed_data", "embed_examples", "write_embeddings"]

log = logging.getLogger("transferlab")


@dataclass(frozen=True)
class BackboneSource:
    """Where the embedding backbone comes from, as the user named it; recorded so that queries are embedded with
    the same network (`open` checks the weights digest).

    Attributes:
        name: a registry name (``efficientnet_lite0``, a timm or Hugging Face name...) or a run directory;
            ``None``: the offline default backbone of the data's modality.
        weights: a local weights file for ``name`` (registry names only).
        pretrained: load the registry's pretrained weights (False: a random initialisation, the floor to compare
            with).
        image_size: input size of image backbones (default: the backbone's own).
        max_length: tokens kept per text; max_seconds: seconds kept per clip.
    """

    name: str | None = None
    weights: str | None = None
    pretrained: bool = True
    image_size: int | None = None
    max_length: int = 128
    max_seconds: float = 10.0

    @property
    def is_run_dir(self) -> bool:
        return (Path(self.name) / MODEL_JSON).is_file()

    def open(self, expected_digest: str | None = None) -> Backbone:
        """The backbone, in eval mode. ``expected_digest``: the weights digest it must have (the one recorded with
        embeddings a query is compared with).

        Raises:
            TransferlabError: an unknown name, a run directory without a backbone, or (with ``expected_digest``)
                different weights than recorded.
        """
        if self.is_run_dir:
            if self.weights is not None or self.image_size is not None:
                raise TransferlabError(f"--weights and --image-size do not apply to a run directory ({self.name}): "
                                       "its backbone is used as it was trained")
            backbone = getattr(load_predictor(self.name), "backbone", None)
            if not isinstance(backbone, Backbone):
                raise TransferlabError(f"the model in {self.name} has no backbone to embed with")
        else:
            backbone = create_backbone(self.name, weights=self.weights, pretrained=self.pretrained,
                                       image_size=self.image_size, max_length=self.max_length,
                                       max_seconds=self.max_seconds)
        backbone.eval()
        if expected_digest is not None and backbone_fingerprint(backbone) != expected_digest:
            raise TransferlabError(
                f"backbone {self.name!r} does not have the weights the embeddings were made with (weights digest "
                f"{backbone_fingerprint(backbone)[:12]}, recorded {expected_digest[:12]}): its weights file or run "
                "directory changed since; embed the gallery again")
        return backbone

    def to_dict(self) -> dict:
        return {"name": str(Path(self.name).resolve()) if self.is_run_dir else self.name,
                "weights": str(Path(self.weights).resolve()) if self.weights else None,
                "pretrained": self.pretrained, "image_size": self.image_size, "max_length": self.max_length,
                "max_seconds": self.max_seconds}

    @classmethod
    def from_dict(cls, values: dict) -> BackboneSource:
        return cls(**{key: values[key] for key in cls.__dataclass_fields__ if key in values})


def embed_examples(backbone: Backbone, data: Examples, *, precision: str, batch_size: int = 32,
                   progress: bool = True, engine: str = "torch") -> np.ndarray:
    """(N, D) float32 embeddings of ``data`` (cached, see `extract_features`, which also describes ``engine``;
    data of another modality than the backbone's is an error naming both)."""
    return extract_features(backbone, data, precision=precision, device=default_device(), batch_size=batch_size,
                            progress=progress, engine=engine).numpy()


def embed_data(spec: str, source: BackboneSource, *, pca: int | None = None, whiten: bool = False,
               precision: str = "auto", batch_size: int = 32, skip_bad_files: bool = False,
               columns: TextColumns | None = None, progress: bool = True, engine: str = "auto") -> EmbeddingSet:
    """Embed every example of every split ``spec`` names (or the ``@split`` it picks), in order.

    Args:
        spec: a data spec (see `transferlab.data.load_splits`); labels are kept when the data has them.
        source: the backbone.
        pca: project on this many principal directions of these embeddings (fitted here, without labels).
        whiten: PCA-whiten (with ``pca`` components, else `projection.WHITEN_VARIANCE` of the variance).
        precision: ``auto``, ``fp32`` or ``bf16``.
        engine: ``torch``, ``onnx`` or ``auto`` (`transferlab.embeddings.extract_features`), chosen once for
            all the splits; the choice is recorded with the embeddings.
    """
    init_from_environment()  # under torchrun, the processes share the examples out (and all get every row)
    splits = load_splits(spec, skip_bad_files=skip_bad_files, columns=columns)
    if source.name is None:
        modality = DATA_MODALITY[type(next(iter(splits.values())))]
        source = dataclasses.replace(source, name=DEFAULT_BACKBONES[modality])
        log.info("backbone: %s (the default for %s data; choose another with --backbone)", source.name, modality)
    backbone = source.open()
    precision = resolve_precision(precision, default_device())
    engine = choose_feature_engine(engine, backbone, precision, default_device(), world_size(),
                                   sum(len(data) for data in splits.values()))
    classes = _shared_classes(splits)
    vectors, items, split_names, labels = [], [], [], []
    for split, data in splits.items():
        if len(data) == 0:
            continue
        vectors.append(embed_examples(backbone, data, precision=precision, batch_size=batch_size,
                                      progress=progress, engine=engine))
        items += _item_names(data)
        split_names += [split] * len(data)
        labels.append(np.array([classes.index(data.classes[i]) for i in data.labels]) if data.has_labels
                      else np.full(len(data), -1))
    if not items:
        raise TransferlabError(f"{spec} holds no examples to embed")
    vectors = np.concatenate(vectors).astype(np.float32)
    labels = np.concatenate(labels).astype(np.int64)
    projection = None
    if pca is not None or whiten:
        projection = Projection.fit(vectors, components=pca, whiten=whiten)
        log.info("%s fitted on the %d embeddings: %d -> %d dimensions", projection.describe()["kind"],
                 len(vectors), vectors.shape[1], projection.dim)
        vectors = projection.apply(vectors)
    info = {
        "data": spec,
        "backbone": {**backbone.spec, "modality": backbone.modality},
        "backbone_source": source.to_dict(),
        "weights_digest": backbone_fingerprint(backbone),
        "preprocess": backbone.preprocess.to_dict(),
        "precision": precision,
        "engine": engine,
        "normalised": projection is not None,  # a projection ends with L2 normalisation; raw features do not
    }
    return EmbeddingSet(vectors, items, split_names, labels if (labels >= 0).any() else None, classes, info,
                        projection)


def write_embeddings(embeddings: EmbeddingSet, out: Path, *, overwrite: bool = False) -> Path:
    """Write ``embeddings`` to ``out`` as one step: an existing directory is replaced (with ``overwrite``) only once
    the new one is complete. Under torchrun, rank 0 writes."""
    if not is_main_process():
        return Path(out)
    with claim_run_dir(out, overwrite=overwrite, resume=False, noun="embeddings directory") as claimed:
        claimed.start()
        embeddings.save(claimed.work)
        claimed.commit()
    return Path(out)


def _shared_classes(splits: dict[str, Examples]) -> list[str]:
    classes: list[str] = []
    for data in splits.values():
        classes += [name for name in data.classes if name not in classes]
    return classes


def _item_names(data: Examples) -> list[str]:
    if getattr(data, "texts", None) is not None:
        return list(data.texts)
    if getattr(data, "paths", None) is not None:
        return [str(path) for path in data.paths]
    return [f"{data.name}#{row}" for row in range(len(data))]
