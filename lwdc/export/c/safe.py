"""The one gate between text from outside lwdc (module paths, the ``name`` prefix, op names) and generated C.

Generated code is compiled and run by the export's own check, so a module named ``x*/ ... /*`` must never turn
into code: names that become identifiers are refused unless strictly ``[A-Za-z0-9_]``, and comment text keeps
only a small set of harmless characters (no ``*``, ``/``, ``\\``, ``?``, newlines or non-ASCII)."""
from __future__ import annotations

import re

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;()<>\[\]'=+#@%-]")
COMMENT_LIMIT = 160


def check_name(name: str) -> str:
    """The prefix of NAME.c, NAME.h and NAME_run(): a short C identifier that clashes with nothing generated."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"name {name!r} must match ^[A-Za-z_][A-Za-z0-9_]{{0,31}}$ (a C identifier of at most 32 "
                         "characters: it prefixes NAME.c, NAME.h and NAME_run)")
    if name.lower() == "main" or name.lower().startswith("lw_"):
        raise ValueError(f"name {name!r} is taken by the generated main.c or the lw_ kernels; choose another")
    return name


def check_identifier(text: str, what: str = "identifier") -> str:
    """Names lwdc itself turns into C identifiers (op names, kernel sections) must already be identifiers."""
    if not isinstance(text, str) or not _IDENTIFIER.fullmatch(text):
        raise ValueError(f"{what} {text!r} must be a C identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return text


def c_comment(text: str) -> str:
    """``/* text */`` with every character outside a harmless set replaced by ``_``, at most COMMENT_LIMIT long."""
    clean = _COMMENT_UNSAFE.sub("_", str(text))
    if len(clean) > COMMENT_LIMIT:
        clean = clean[:COMMENT_LIMIT - 3] + "..."
    return f"/* {clean} */"
