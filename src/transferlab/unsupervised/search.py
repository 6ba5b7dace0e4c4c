"""Search an index with examples: embed them with the backbone the index records, then look up their neighbours."""

from __future__ import annotations

from pathlib import Path

from transferlab.data import Examples
from transferlab.data.torch_dataset import DATA_MODALITY
from transferlab.engine.precision import default_device, resolve_precision
from transferlab.errors import TransferlabError
from transferlab.unsupervised.embed import BackboneSource, embed_examples
from transferlab.unsupervised.index import Neighbour, SearchIndex

__all__ = ["search_examples"]


def search_examples(index_dir: Path | SearchIndex, queries: Examples, *, k: int = 10, precision: str | None = None,
                    progress: bool = True) -> list[list[Neighbour]]:
    """The ``k`` nearest gallery items of each query example, best first.

    The queries are embedded with the backbone recorded in the index (checked against its weights digest) and the
    precision the gallery was embedded in (unless ``precision`` is given), then go through its projection.

    Raises:
        TransferlabError: queries of another modality than the index's, a backbone whose weights changed since the
            gallery was embedded, ``k`` outside 1..gallery size.
    """
    index = index_dir if isinstance(index_dir, SearchIndex) else SearchIndex(index_dir)
    modality = index.modality
    query_modality = DATA_MODALITY.get(type(queries))
    if query_modality != modality:
        raise TransferlabError(f"the index at {index.directory} holds {modality} embeddings; the queries "
                               f"({queries.name}) are {query_modality or type(queries).__name__} data")
    if not 1 <= k <= len(index):  # before embedding anything
        raise TransferlabError(f"--k {k}: must be between 1 and the gallery's size, {len(index)}")
    backbone = BackboneSource.from_dict(index.info["backbone_source"]).open(index.info["weights_digest"])
    precision = resolve_precision(precision or index.info.get("precision", "auto"), default_device())
    vectors = embed_examples(backbone, queries, precision=precision, progress=progress)
    return index.search(vectors, k)
