"""mmdistill: multimodal and crossmodal knowledge distillation.

Data flows one way: batch -> masker -> teacher / student -> named losses -> weights -> sum.
"""

__version__ = "0.1.0"
