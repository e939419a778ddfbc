"""Experiment grids: attacks x seeds x environments x parameter sweeps, one Kedro session per cell,
on a Dask cluster (``kedro grid --spec conf/base/grid.yml``; see ``grid.run``)."""
