"""transferlab: transfer learning from pretrained models, fast on a CPU.

    import transferlab
    result = transferlab.fit({"train": "photos/", "method": "finetune", "out": "runs/ft"})
    model = transferlab.load("runs/ft")
"""

from transferlab.api import FitResult, evaluate, fit, load, predict
from transferlab.config import FitConfig
from transferlab.errors import TransferlabError

__version__ = "0.1.0"

__all__ = ["FitConfig", "FitResult", "TransferlabError", "evaluate", "fit", "load", "predict", "__version__"]
