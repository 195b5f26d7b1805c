"""MkDocs hook: every public name needs a complete docstring.

Run by `mkdocs build` (see `hooks:` in mkdocs.yml). Problems are logged as
warnings, so `mkdocs build --strict` (what CI runs) fails on them. It can
also be run alone: `python docs/hooks/check_docstrings.py` prints them and
exits with 1 when there are any.

The public surface is what the packages export: the `__all__` of
`metakeras`, of every public (not `_`-prefixed) module under it and of the
modules those export, plus the public functions of modules without
`__all__` (initializers). `cli` and `demo` are programs, documented in
docs/cli.md instead. Every module exported by `metakeras.__all__` must also
have an API page.

Rules, following Keras's own docstrings (see STYLE.md):

- every exported class and function has a docstring with a summary line and
  an `Example:` (or `Examples:`) section;
- if it takes arguments, an `Args:` section naming each of them, and each
  argument that has a default says so ("Defaults to ...");
- a function that returns a value has a `Returns:` (or `Yields:`) section;
- public methods defined in metakeras (not Keras overrides such as
  `get_config` or `train_step`) have a docstring with `Args:` for their
  arguments and `Returns:` when they return a value.
"""

import ast
import importlib
import inspect
import logging
import os
import pkgutil
import sys
import textwrap
import types

log = logging.getLogger("mkdocs.hooks.check_docstrings")

ROOT_PACKAGE = "metakeras"
# Public modules that are programs, not library API (documented in cli.md).
_APPLICATIONS = {"cli", "demo"}
# Methods whose contract is Keras's (documented there), not ours.
_FRAMEWORK_METHODS = {
    "build",
    "call",
    "compile_from_config",
    "compute_output_shape",
    "from_config",
    "get_config",
    "load_own_variables",
    "make_train_function",
    "save_own_variables",
    "on_epoch_end",
    "predict_step",
    "test_step",
    "train_step",
}
_ARGS = ("Args:", "Arguments:")
_RETURNS = ("Returns:", "Yields:")
_EXAMPLES = ("Example:", "Examples:")


def public_objects():
    """`(qualified name, object)` of every exported class and function."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    root = importlib.import_module(ROOT_PACKAGE)
    modules = [root] + [
        importlib.import_module(f"{ROOT_PACKAGE}.{info.name}")
        for info in pkgutil.iter_modules(root.__path__)
        if not info.name.startswith("_") and info.name not in _APPLICATIONS
    ]
    seen = set()
    found = []
    while modules:
        module = modules.pop(0)
        if module.__name__ in seen:
            continue
        seen.add(module.__name__)
        names = getattr(module, "__all__", None)
        if names is None:
            names = [
                n
                for n, v in vars(module).items()
                if not n.startswith("_")
                and (inspect.isfunction(v) or inspect.isclass(v))
                and getattr(v, "__module__", "") == module.__name__
            ]
        for name in names:
            value = getattr(module, name)
            if isinstance(value, types.ModuleType):
                if value.__name__.startswith(ROOT_PACKAGE + "."):
                    modules.append(value)
                continue
            public = inspect.isclass(value) or inspect.isfunction(value)
            if public and getattr(value, "__module__", "").startswith(ROOT_PACKAGE):
                found.append((f"{module.__name__}.{name}", value))
    unique = {}
    for qualname, value in found:
        unique.setdefault(id(value), (qualname, value))
    return sorted(unique.values(), key=lambda item: item[0])


def problems():
    """Every docstring problem of the public surface, as text lines."""
    found = []
    for qualname, value in public_objects():
        found += _check(qualname, value, exported=True)
        if inspect.isclass(value):
            for name, member in vars(value).items():
                if name.startswith("_") or name in _FRAMEWORK_METHODS:
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    if not inspect.getdoc(member):
                        found.append(f"{qualname}.{name}: property has no docstring")
                    continue
                if inspect.isfunction(member):
                    found += _check(f"{qualname}.{name}", member, exported=False)
    return found


def _check(qualname, value, exported):
    doc = inspect.getdoc(value) or ""
    if not doc.strip():
        return [f"{qualname}: no docstring"]
    issues = []
    function = value.__init__ if inspect.isclass(value) else value
    parameters = _parameters(function) if inspect.isfunction(function) else {}
    if inspect.isclass(value) and not _defined_here(function):
        parameters = {}  # An inherited constructor is documented upstream.
    if parameters:
        section = _section(doc, _ARGS)
        if section is None:
            issues.append(f"{qualname}: no Args section for {list(parameters)}")
        else:
            for name, has_default in parameters.items():
                entry = _entry(section, name)
                if entry is None:
                    issues.append(f"{qualname}: Args does not describe `{name}`")
                elif exported and has_default and "default" not in entry.lower():
                    issues.append(
                        f"{qualname}: Args entry `{name}` does not end with its "
                        "default ('Defaults to ...')"
                    )
    returns = inspect.isfunction(value) and _returns_value(value)
    if returns and _section(doc, _RETURNS) is None:
        issues.append(f"{qualname}: returns a value but has no Returns section")
    if exported and _section(doc, _EXAMPLES) is None:
        issues.append(f"{qualname}: no Example section")
    return issues


def _defined_here(function):
    return getattr(function, "__module__", "").startswith(ROOT_PACKAGE)


def _parameters(function):
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return {}
    result = {}
    for name, parameter in signature.parameters.items():
        if name in ("self", "cls"):
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:
            name = "*" + name
        elif parameter.kind is parameter.VAR_KEYWORD:
            name = "**" + name
        result[name] = parameter.default is not parameter.empty
    return result


def _section(doc, titles):
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip() in titles and not line.startswith(" "):
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                body.append(following)
            return "\n".join(body)
    return None


def _entry(section, name):
    """The text of one `name: description` entry of an Args section."""
    bare = name.lstrip("*")
    lines = textwrap.dedent(section).splitlines()
    for i, line in enumerate(lines):
        head = line.split(":", 1)[0].strip().lstrip("*")
        if not line.startswith(" ") and head.split(" ")[0] == bare and ":" in line:
            text = [line]
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                text.append(following)
            return " ".join(t.strip() for t in text)
    return None


def _returns_value(function):
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False
    tree = ast.parse(source)
    top = tree.body[0]

    class Finder(ast.NodeVisitor):
        found = False

        def visit_FunctionDef(self, node):
            if node is top:
                self.generic_visit(node)

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_Lambda(self, node):
            return

        def visit_Return(self, node):
            if node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None
            ):
                self.found = True

        def visit_Yield(self, node):
            self.found = True

    finder = Finder()
    finder.visit(top)
    return finder.found


def undocumented_modules(docs_dir):
    """Exported modules of `metakeras` that no page renders with `:::`."""
    root = importlib.import_module(ROOT_PACKAGE)
    text = ""
    for folder, _, files in os.walk(docs_dir):
        for name in files:
            if name.endswith(".md"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    text += f.read()
    missing = []
    for name in getattr(root, "__all__", []):
        value = getattr(root, name)
        if isinstance(value, types.ModuleType) and f"::: {value.__name__}" not in text:
            missing.append(value.__name__)
    return missing


def on_pre_build(config, **kwargs):
    """MkDocs event: log each docstring problem as a warning."""
    for problem in problems():
        log.warning("docstring: %s", problem)
    for module in undocumented_modules(config["docs_dir"]):
        log.warning(
            "docs: exported module %s has no API page; add '::: %s' to a page "
            "under docs/api/ and to the nav in mkdocs.yml",
            module,
            module,
        )


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    found = problems() + [
        f"{m}: exported module without an API page"
        for m in undocumented_modules(os.path.join(os.getcwd(), "docs"))
    ]
    print("\n".join(found) or "docstrings: no problems")
    sys.exit(1 if found else 0)
