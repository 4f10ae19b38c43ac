"""The Modality Focusing Hypothesis as library features: Algorithm 1 (:mod:`.algorithm1`, which teacher
channels hold modality-general decisive information), a vectorised trainer for sweeps of tiny models
(:mod:`.ensemble`), paired-modality features (:mod:`.pairs`) and the advisor (:mod:`.advisor`).

The modality Venn diagram generator is a data source (:mod:`mmdistill.data.generated.venn`); the paper's studies and
reproductions live in :mod:`mmdistill.studies` and are never imported from here.
"""
