"""Prompts: a name (the kind of answer: object, background, ...) and the text put to a model."""

from __future__ import annotations

from dataclasses import dataclass

from ddsem.errors import UserError

# The paper's two questions (section 5.2: "describe the object", "describe the background").
DEFAULT_PROMPTS: dict[str, str] = {
    "object": "Describe the object.",
    "background": "Describe the background.",
}


@dataclass(frozen=True)
class Prompt:
    name: str  # object | background | a user's NAME: the kind an attribute is matched in
    text: str


def parse_prompts(options: list[str] | None, defaults: dict[str, str]) -> list[Prompt]:
    """``["NAME=TEXT", ...]`` -> prompts (they replace the defaults); none -> the defaults."""
    if not options:
        return [Prompt(n, t) for n, t in defaults.items()]
    prompts: list[Prompt] = []
    for option in options:
        name, sep, text = option.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            raise UserError(
                f"--prompt needs NAME=TEXT (e.g. object='Describe the object.'), got {option!r}"
            )
        if not text:
            raise UserError(
                f"prompt {name!r} is empty: give it a question, e.g. {name}='Describe the {name}.'"
            )
        if not name.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"prompt name {name!r} must be letters, digits, '-' or '_'")
        if any(p.name == name for p in prompts):
            raise UserError(f"prompt {name!r} is given more than once")
        prompts.append(Prompt(name, text))
    return prompts
