"""Classifier architectures behind one registry: ``build_model(name, num_classes)``."""

from cgd_kedro.models.registry import MODEL_REGISTRY, build_model, list_models, register_model

__all__ = ["MODEL_REGISTRY", "build_model", "list_models", "register_model"]
