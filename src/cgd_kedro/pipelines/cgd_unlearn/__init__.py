"""``cgd_unlearn``: CLIP-guided unlearning of each victim,
next to the defenses it is compared with."""

from cgd_kedro.pipelines.cgd_unlearn.pipeline import create_pipeline

__all__ = ["create_pipeline"]
