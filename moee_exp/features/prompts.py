"""The paper's prompt templates and how a text is put into one.

Templates are literal: their double quotes belong to them, so ``none`` wraps the text in quotes and
``prompteol`` ends on an opening quote (paper.md, "Prompts").
"""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import Checked
from ..errors import ConfigError


@dataclass
class PromptConfig(Checked):
    group = "prompt"

    name: str = "prompteol"  # one of TEMPLATES (the paper's prompts; PromptEOL is its default)
    template: str | None = None  # None: the paper's template for `name`
    normalize: bool = True  # the public code's clean-up of the text (moee_exp.features.prompts.normalize_text)

    def check(self) -> None:
        self.text_template  # noqa: B018 (raises ConfigError for a template without {text} or an unknown name)

    @property
    def text_template(self) -> str:
        """The template texts are put into: ``template``, or the paper's for ``name``."""
        if self.template:
            try:
                return check_template(self.template)
            except ValueError as err:
                raise ConfigError(f"prompt.template: {err}") from None
        if self.name not in TEMPLATES:
            raise ConfigError(
                f"prompt.name={self.name!r} has no template; use one of {', '.join(TEMPLATES)} "
                "or set prompt.template='... {text} ...'"
            )
        return TEMPLATES[self.name]


TEMPLATES: dict[str, str] = {
    "none": '"{text}"',
    "prompteol": 'This sentence : "{text}" means in one word:"',
    "style": 'In one word, describe the style of the following sentence - "{text}" :"',
    "sentiment": (
        "In one word, describe the sentiment of the following sentence (positive, neutral, or negative)"
        ' - "{text}" :'
    ),
    "tone": (
        'In one word, describe the tone of the following sentence - "{text}"'
        " (e.g., formal, informal, humorous, serious):"
    ),
    "intent": (
        "In one word, describe the intent behind the following sentence (e.g., request, suggestion, command)"
        ' - "{text}" :'
    ),
    "complexity": (
        'In one word, rate the complexity of the following sentence (simple, moderate, complex) - "{text}" :'
    ),
    "subjectivity": (
        'In one word, describe whether the following sentence is subjective or objective - "{text}" :'
    ),
    "language_style": (
        "In one word, describe the language style of the following sentence"
        ' (e.g., academic, conversational, literary) - "{text}" :'
    ),
    "grammar_structure": (
        "In one word, describe the grammatical structure of the following sentence"
        ' (simple, compound, complex) - "{text}" :'
    ),
}

_END_PUNCT = ('.', '?', '!', '"', "'")


def check_template(template: str) -> str:
    if template.count("{text}") != 1:
        raise ValueError(f"a prompt template must contain '{{text}}' exactly once, got: {template!r}")
    return template


def normalize_text(text: str) -> str:
    """The public code's text clean-up (on by default, so scores are comparable with the paper's):
    double quotes become ', an empty text becomes '.', a final '.' is added unless it already ends in . ? ! " or '.
    """
    text = text.replace('"', "'").strip()
    if not text:
        return "."
    return text if text.endswith(_END_PUNCT) else text + "."


TEXT_MODES = ("clean", "paper")


def apply_prompt(text: str, template: str, normalize: bool = True, instruction: str = "", mode: str = "clean") -> str:
    """The prompted string of one text. ``instruction`` (moee_exp.features.instructions, already formatted) goes before the
    text, inside the template. ``mode``:

    - clean: ``normalize_text`` on the text alone (strip; empty -> '.'), then the instruction before it.
    - paper: the public code's order: instruction + text, a final '.' unless empty or ending in . ? ! " ',
      double quotes -> ', and no strip (an empty text stays empty); ``_`` -> space over the whole prompted string
      (instruction and template included), which is then stripped at its ends.
    """
    if mode == "paper":
        if not normalize:
            return template.replace("{text}", instruction + text)
        sent = instruction + text
        if sent and not sent.endswith(_END_PUNCT):
            sent += "."
        return template.replace("{text}", sent.replace('"', "'")).replace("_", " ").strip()
    if mode != "clean":
        raise ValueError(f"text mode {mode!r} is not one of {TEXT_MODES}")
    if normalize:
        # The public code also turns '_' into ' ' in the prompted string.
        return template.replace("{text}", instruction + normalize_text(text)).replace("_", " ")
    return template.replace("{text}", instruction + text)
