"""The trainer's data sources (`KIND:PATH`): NIH ChestX-ray14, CheXpert and synthetic lesions.

`open_source("nih:/data/nih", labels="default8", seed=0)` returns a `DataSource` whose `records`
carry labels over the chosen label space, boxes and a patient-disjoint split;
`source.load_image(record)` gives the `ImageData` the model's `spec.preprocess` takes.
"""

from cxrviewer.trainer.data.sources import (
    LABEL_SPACES, SOURCES, SPLITS, DataSource, Record, UnknownSource, open_source, parse_source,
    register_source, resolve_label_space,
)
from cxrviewer.trainer.data import chexpert as _chexpert  # noqa: F401,E402  (registers "chexpert")
from cxrviewer.trainer.data import nih as _nih  # noqa: F401,E402  (registers "nih")
from cxrviewer.trainer.data import store as _store  # noqa: F401,E402  (registers "store")
from cxrviewer.trainer.data import dicom as _dicom  # noqa: F401,E402  (registers "dicom")
from cxrviewer.trainer.data import synthetic as _synthetic  # noqa: F401,E402  (registers "synthetic")
from cxrviewer.trainer.data.synthetic import SyntheticSource

__all__ = ["LABEL_SPACES", "SOURCES", "SPLITS", "DataSource", "Record", "SyntheticSource", "UnknownSource",
           "open_source",
           "parse_source", "register_source", "resolve_label_space"]
