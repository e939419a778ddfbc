"""``clip_split``: CGD's entropy map and the clean / triggered split
of each poisoned training set."""

from cgd_kedro.pipelines.clip_split.pipeline import create_pipeline

__all__ = ["create_pipeline"]
