"""Write the API pages from each public module's ``__all__`` before Sphinx reads the sources.

For every module named in the ``apigen_modules`` config value this writes
``api/generated/<module>.rst``: the module's docstring and one ``autosummary`` table (with
``:toctree:``) over its sorted ``__all__``, from which autosummary writes a page per name. It
also writes ``api/generated/modules.inc``, the toctree of those module pages that ``api.rst``
includes. Adding a module to ``apigen_modules`` in ``conf.py`` is all a new module needs.

* A name that a deeper listed module also exports (``pyro_vaeflow.FlowDecoder`` is
  ``pyro_vaeflow.distributions.FlowDecoder``) is documented once, there, and linked to from both.
* Dunder names (``__version__``) are metadata and get no page; a constant without a ``#:``
  comment gets no docstring rather than its type's.
* Base classes are shown under their public names, not their private defining module's, and
  a private base class (``_Coupling2d``) as its own bases.
* Files are rewritten only when their content changes and pages of names that have left an
  ``__all__`` are deleted, so incremental builds stay right.

The pages are written on ``config-inited``, before Sphinx looks for source files, so even a
fresh build finds them and autosummary's own ``builder-inited`` step sees their tables.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

OUTPUT = Path("api", "generated")
TOCTREE = "modules.inc"


def public_names(module: ModuleType) -> list[str]:
    """The sorted ``__all__`` of ``module``, without dunder names."""
    if not hasattr(module, "__all__"):
        raise ValueError(f"apigen: {module.__name__} has no __all__")
    return sorted(name for name in module.__all__ if not name.startswith("__"))


def documented_names(modules: list[ModuleType]) -> dict[int, str]:
    """``id(obj)`` → the full name under which ``obj`` is documented.

    An object exported by several listed modules is documented under the deepest one.
    """
    names: dict[int, str] = {}
    for module in sorted(modules, key=lambda m: m.__name__.count(".")):
        for name in public_names(module):
            names[id(getattr(module, name))] = f"{module.__name__}.{name}"
    return names


def module_page(module: ModuleType, names: dict[int, str]) -> str:
    title = module.__name__
    # autosummary wants names relative to the current module (``distributions.FlowDecoder``).
    prefix = f"{module.__name__}."
    entries = [
        names[id(getattr(module, name))].removeprefix(prefix) for name in public_names(module)
    ]
    return "\n".join(
        [
            title,
            "=" * len(title),
            "",
            f".. automodule:: {module.__name__}",
            "",
            ".. autosummary::",
            "   :toctree: .",
            "",
            *(f"   ~{entry}" for entry in entries),
            "",
        ]
    )


def write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate(app: Sphinx, config: Config) -> None:
    modules = [importlib.import_module(name) for name in config.apigen_modules]
    names = documented_names(modules)
    out = Path(app.srcdir, OUTPUT)
    out.mkdir(parents=True, exist_ok=True)
    pages = {f"{module.__name__}.rst": module_page(module, names) for module in modules}
    # The module pages and autosummary's page for every name; anything else is stale.
    expected = set(pages) | {f"{name}.rst" for name in names.values()} | {TOCTREE}
    for path in out.iterdir():
        if path.name not in expected:
            logger.info("apigen: removing stale %s", path)
            path.unlink()
    for filename, text in pages.items():
        write_if_changed(out / filename, text)
    toctree = [".. toctree::", "   :maxdepth: 2", ""]
    toctree += [f"   {OUTPUT.as_posix()}/{module.__name__}" for module in modules]
    write_if_changed(out / TOCTREE, "\n".join(toctree) + "\n")
    app.apigen_names = names


def public_bases(app: Sphinx, name: str, obj: Any, options: Any, bases: list) -> None:
    """Show base classes under their public names, and private ones as their own bases."""
    names = getattr(app, "apigen_names", {})

    def expand(base: Any) -> list:
        if isinstance(base, type) and base.__name__.startswith("_") and id(base) not in names:
            return [ancestor for parent in base.__bases__ for ancestor in expand(parent)]
        return [base]

    expanded = list(dict.fromkeys(ancestor for base in bases for ancestor in expand(base)))
    bases[:] = [f":py:class:`~{names[id(b)]}`" if id(b) in names else b for b in expanded]


def drop_type_docstrings(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """Give a constant without a ``#:`` comment no docstring, rather than its type's.

    autodoc falls back on ``type(obj).__doc__`` (``dict``'s, say), which is not about the
    constant and is not valid reST either.
    """
    type_doc = getattr(type(obj), "__doc__", None)
    if what != "data" or not isinstance(type_doc, str):
        return
    if "\n".join(lines).strip() == inspect.cleandoc(type_doc).strip():
        lines.clear()


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("apigen_modules", [], "env", types=frozenset({list, tuple}))
    app.connect("config-inited", generate)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("autodoc-process-docstring", drop_type_docstrings)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
