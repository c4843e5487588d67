"""The op table's entries, one file per family; importing this package registers them all. A new op is a new
``Op`` subclass decorated with ``@register_op`` (see ``registry``), here or in a user's own module."""
from ..registry import Op, lowers, register_op, unregister_op
from . import activations, add, concat, conv, pool, views  # noqa: F401  (registration)
from . import layout  # noqa: F401  (registration)
from . import movement, reduce, resize  # noqa: F401  (registration)
from . import elementwise, mobile_acts  # noqa: F401  (registration)
from . import binary  # noqa: F401  (registration)
from .unary import Unary

__all__ = ["Op", "Unary", "lowers", "register_op", "unregister_op"]
