"""Unsupervised transfer: a frozen (or fine-tuned) backbone's embeddings put to work without training a head.

Embeddings directories (`embed`), FAISS indexes and nearest-neighbour search, clustering, retrieval and clustering
quality, and ranking candidate backbones on a user's data before any training (LogME, LEEP, NCE, H-score, k-NN).
"""
