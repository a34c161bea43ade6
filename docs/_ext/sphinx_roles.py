"""A griffe extension for the API pages: Sphinx roles in docstrings become links.

xferclass's docstrings are Google style but name other objects the Sphinx way,
``:func:`fit``` or ``:class:`xferclass.Preprocessing```. Markdown would show the
role as text (":func:" before the name). This extension rewrites each role into
an *optional* mkdocs-autorefs cross-reference: a link when the target has an
API entry in these docs, plain code otherwise, and never a strict-mode warning.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const):`(~?)([\w.]+)`")


class SphinxRoles(griffe.Extension):
    """Replace ``:role:`target``` in every docstring with an optional cross-reference."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None or ":" not in obj.docstring.value:
            return
        exported = _exported(obj)
        module = obj.module.path if obj.kind is not griffe.Kind.MODULE else obj.path

        def replace(match: re.Match[str]) -> str:
            short, target = match.group(1), match.group(2)
            if target.startswith("xferclass"):
                identifier = target
            elif target in exported:
                identifier = f"xferclass.{target}"
            else:
                identifier = f"{module}.{target}"
            title = target.rsplit(".", 1)[-1] if short else target
            return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

        obj.docstring.value = _ROLE.sub(replace, obj.docstring.value)


def _exported(obj: griffe.Object) -> set[str]:
    """The names in ``xferclass.__all__``."""
    package = obj.package
    names = package.exports if package.exports is not None else ()
    return {name if isinstance(name, str) else getattr(name, "name", str(name)) for name in names}
