"""Reference models, users' models from a config, and feature hooks."""

from . import hf, resnet, spectrogram_cnn, timm_encoder  # noqa: F401  (register the hf, resnet, spec_cnn, timm encoders)
from .custom import CustomModelConfig, check_outputs
from .encoders import EncoderConfig, build_encoder
from .hooks import FeatureHooks, find_module
from .multimodal import AnyModelConfig, ModelConfig, MultimodalClassifier, build_model, model_modalities

__all__ = [
    "AnyModelConfig",
    "CustomModelConfig",
    "EncoderConfig",
    "FeatureHooks",
    "ModelConfig",
    "MultimodalClassifier",
    "build_encoder",
    "build_model",
    "check_outputs",
    "find_module",
    "model_modalities",
]
