"""lwdc: layer-wise differentiable compression of convolutional networks.

    model --expand--> supernet --search--> --derive--> plain nn.Module --finetune--> --profile/export-->

The functions re-exported here (``expand``, ``derive``, ``compress``, ``profile``) live in modules of other
names (``space``, ``derivation``, ``api``, ``profiling``), so ``lwdc.profile`` is always the function.
"""
from .api import CompressConfig, CompressResult, compress
from .derivation import derive, max_output_difference
from .methods import list_methods, register_method
from .ops import OP_SETS, get_op
from .profiling import Profile, profile
from .runs import Run
from .space import ExpansionError, Supernet, expand
from .summary import format_summary

__version__ = "0.1.0"
__all__ = ["expand", "derive", "compress", "profile", "CompressConfig", "CompressResult", "Supernet", "Run",
           "ExpansionError", "Profile", "OP_SETS", "get_op", "max_output_difference", "register_method",
           "list_methods", "format_summary"]
