"""The training methods (`cxrviewer-train methods` lists them); importing this package registers them."""

from cxrviewer.trainer.methods.base import (METHODS, Method, Stage, UnknownMethod, get_method, methods_taking_inputs,
                                          register_method)
from cxrviewer.trainer.methods import baseline as _baseline  # noqa: F401,E402
from cxrviewer.trainer.methods import byol_cam as _byol_cam  # noqa: F401,E402
from cxrviewer.trainer.methods import medaug as _medaug  # noqa: F401,E402
from cxrviewer.trainer.methods import cianet as _cianet  # noqa: F401,E402
from cxrviewer.trainer.methods import scalp as _scalp  # noqa: F401,E402
from cxrviewer.trainer.methods import kacl as _kacl  # noqa: F401,E402

__all__ = ["METHODS", "Method", "Stage", "UnknownMethod", "get_method", "methods_taking_inputs", "register_method"]
