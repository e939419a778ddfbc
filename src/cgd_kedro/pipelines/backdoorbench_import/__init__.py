"""``backdoorbench_import``: bring a BackdoorBench ``attack_result.pt`` into the catalog
as an experiment."""

from cgd_kedro.pipelines.backdoorbench_import.pipeline import create_pipeline

__all__ = ["create_pipeline"]
