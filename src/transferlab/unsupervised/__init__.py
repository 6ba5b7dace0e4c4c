"""Unsupervised transfer: a frozen (or fine-tuned) backbone's embeddings put to work without training a head.

Embeddings directories (`embed_data`, `write_embeddings`), FAISS indexes and nearest-neighbour search
(`write_index`, `search_examples`), clustering, retrieval and clustering quality, and ranking candidate backbones
on a user's data before any training (LogME, LEEP, NCE, H-score, k-NN).
"""

from transferlab.unsupervised.embed import BackboneSource, embed_data, write_embeddings
from transferlab.unsupervised.embedding_set import EmbeddingSet, is_embedding_dir
from transferlab.unsupervised.index import INDEX_KINDS, SearchIndex, write_index
from transferlab.unsupervised.search import search_examples

__all__ = ["INDEX_KINDS", "BackboneSource", "EmbeddingSet", "SearchIndex", "embed_data", "is_embedding_dir",
           "search_examples", "write_embeddings", "write_index"]
