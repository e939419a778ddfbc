"""kedro-datasets' JSON, CSV, figure and text datasets with atomic saves (see ``atomic``).

Same parameters and behaviour as the kedro-datasets classes they extend; only the save goes
through a temporary file and a rename, so a killed run never leaves a truncated report file.
"""

from __future__ import annotations

from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as _MatplotlibDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.text import TextDataset as _TextDataset

from cgd_kedro.datasets.atomic import AtomicSaveMixin


class JSONDataset(AtomicSaveMixin, _JSONDataset):
    """``kedro_datasets.json.JSONDataset``, saved atomically."""


class CSVDataset(AtomicSaveMixin, _CSVDataset):
    """``kedro_datasets.pandas.CSVDataset``, saved atomically."""


class MatplotlibDataset(AtomicSaveMixin, _MatplotlibDataset):
    """``kedro_datasets.matplotlib.MatplotlibDataset`` for one figure per file, saved atomically."""


class TextDataset(AtomicSaveMixin, _TextDataset):
    """``kedro_datasets.text.TextDataset``, saved atomically."""
