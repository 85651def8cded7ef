"""Annotators of real images (LLaVA, the offline colour palette) and the attribute vocabulary.

Compute only: images and texts in, answers and vocabularies out; ``ddsem.cli`` stores them.
"""
