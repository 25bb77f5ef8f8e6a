"""Study datasets in one canonical schema: hub ids, local folders and files, the synthetic set.

Example:
    >>> from hooked_vlm.data import load_study_data
    >>> data = load_study_data("nlphuji/flickr30k", split="test", n=500, task="caption")
    >>> data.column_names
    ['id', 'image', 'label', 'captions', 'question', 'answers']
"""

from hooked_vlm.data.adapters import ADAPTERS, Adapter, detect_adapter, get_adapter
from hooked_vlm.data.loaders import HUB_SOURCES, HubSource, load_study_data
from hooked_vlm.data.schema import (
    STUDY_COLUMNS,
    STUDY_FEATURES,
    TASK_FIELDS,
    SchemaError,
    validate_study_dataset,
)

__all__ = [
    "ADAPTERS",
    "HUB_SOURCES",
    "STUDY_COLUMNS",
    "STUDY_FEATURES",
    "TASK_FIELDS",
    "Adapter",
    "HubSource",
    "SchemaError",
    "detect_adapter",
    "get_adapter",
    "load_study_data",
    "validate_study_dataset",
]
