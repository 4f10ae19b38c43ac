"""Will crossmodal KD help? The advisor predicts the KD gain of a teacher modality set for a student's
modalities before any distillation is trained (:func:`advise` on arrays, :func:`advise_dataset` on a registered
dataset or a run folder). How it works and how well: docs/advisor.md.
"""

from .predict import Advice, advise, advise_dataset

__all__ = ["Advice", "advise", "advise_dataset"]
