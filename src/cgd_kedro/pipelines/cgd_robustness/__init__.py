"""``cgd_robustness``: CGD once more, with a backdoored CLIP as its reference,
beside the normal CGD."""

from cgd_kedro.pipelines.cgd_robustness.pipeline import create_pipeline

__all__ = ["create_pipeline"]
