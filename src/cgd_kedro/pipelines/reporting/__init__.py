"""``reporting``: the defense and split tables, summary figures and a self-contained report."""

from cgd_kedro.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
