"""Kedro runners of the project: ``DaskRunner``
(``kedro run --runner cgd_kedro.runner.DaskRunner``)."""

from cgd_kedro.runner.dask_runner import DaskRunner

__all__ = ["DaskRunner"]
