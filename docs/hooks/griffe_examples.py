"""Griffe extension: render Keras-style `Example:` sections as code.

Keras writes the example after a blank line, unindented, as doctest lines or
a fenced block. The Google-style parser only reads an indented block as a
section's content, so this moves the example under the section title and
fences doctest lines as `pycon`, without changing the docstrings in the
source (which stay readable with `help()` and runnable with `doctest`).
"""

import re

import griffe

_TITLES = ("Example:", "Examples:")
_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:$")


def rewrite(text):
    """Returns `text` with its example section indented and doctests fenced."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() in _TITLES and not line.startswith(" "):
            rest = lines[i + 1 :]
            end = next((j for j, b in enumerate(rest) if _SECTION.match(b)), len(rest))
            body, after = rest[:end], rest[end:]
            while body and not body[0].strip():
                body.pop(0)
            while body and not body[-1].strip():
                body.pop()
            if not body or body[0].startswith("    "):
                return text  # Already in Google style.
            if not any(b.lstrip().startswith("```") for b in body) and any(
                b.lstrip().startswith(">>>") for b in body
            ):
                body = ["```pycon", *body, "```"]
            indented = [("    " + b) if b.strip() else "" for b in body]
            after = ([""] if after else []) + after
            return "\n".join([*lines[:i], "Examples:", *indented, *after])
    return text


class KerasExamples(griffe.Extension):
    """Rewrites the docstring of every object as it is loaded."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
