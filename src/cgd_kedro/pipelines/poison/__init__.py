"""``poison``: load the dataset, poison it per attack, train and evaluate the victim."""

from cgd_kedro.pipelines.poison.pipeline import create_pipeline

__all__ = ["create_pipeline"]
