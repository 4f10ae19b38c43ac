"""Reference models and feature hooks."""

from .encoders import EncoderConfig, build_encoder
from .hooks import FeatureHooks, find_module
from .multimodal import ModelConfig, MultimodalClassifier, build_model, model_modalities

__all__ = ["EncoderConfig", "FeatureHooks", "ModelConfig", "MultimodalClassifier", "build_encoder", "build_model", "find_module", "model_modalities"]
