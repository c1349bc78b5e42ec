"""Synthetic data heed owns for its default models: number translation and report summarization.

Each generator draws examples from a seeded `random.Random`, and splits its example space by a
hash into training and held-out parts, so evaluation uses inputs the models never saw.
"""
