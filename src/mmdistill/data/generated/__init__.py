"""Datasets made by a seeded generator: the modality Venn diagram, the Gaussian demo task, procedural RGB-D
scenes."""
