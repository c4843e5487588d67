"""lwdc: layer-wise differentiable compression of convolutional networks.

    model --expand--> supernet --search--> --derive--> plain nn.Module --finetune--> --profile/export-->
"""
from .api import CompressConfig, CompressResult, compress
from .derive import derive, max_output_difference
from .ops import OP_SETS, get_op
from .profile import Profile, profile
from .space import ExpansionError, Supernet, expand

__version__ = "0.1.0"
__all__ = ["expand", "derive", "compress", "profile", "CompressConfig", "CompressResult", "Supernet",
           "ExpansionError", "Profile", "OP_SETS", "get_op", "max_output_difference"]
