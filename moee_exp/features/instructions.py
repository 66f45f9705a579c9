"""Task instructions: the string put before each text (inside the prompt template), per task and query/document.

The public code (tianyi-lab/MoE-Embedding, eval_mteb.py) prepends, by default, the E5 instruction of the task in
GritLM format, ``"<|user|>\\n" + instruction + "\\n<|embed|>\\n"``, to every text; the whole string then goes into
the prompt template. The E5 strings come from mteb's own task metadata (``task.metadata.prompt``), which holds the
public code's string for the paper's 10 non-STS datasets (tests/test_protocol.py checks they agree), and from
``E5_TABLE`` below where mteb has none (the STS sets, SummEval; strings as in the public code).

Modes (``protocol.instructions``): ``none`` (no instruction), ``e5`` (the E5 set; ``protocol.instruction_table``
entries override it per task), ``custom`` (only ``protocol.instruction_table``). A table entry is a string, or
``{query: ..., document: ...}`` for tasks that encode both (reranking, retrieval).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache

log = logging.getLogger(__name__)

MODES = ("none", "e5", "custom")
# The public code's GritLM format; an empty instruction still gets "<|embed|>\n" (its gritlm_instruction_format).
FORMATS = {"gritlm": ("<|user|>\n{instruction}\n<|embed|>\n", "<|embed|>\n"), "plain": ("{instruction}", "")}

_STS = "Retrieve semantically similar text."
# E5 instructions mteb 2.x's metadata does not hold (the public code's eval_mteb.py SET_TO_TASK_TO_DS_TO_PROMPT['e5']).
E5_TABLE: dict[str, str | dict] = {
    **{name: _STS for name in ("STS12", "STS13", "STS14", "STS15", "STS16", "BIOSSES", "SICK-R", "STSBenchmark")},
    "SummEval": "Given a news summary, retrieve other semantically similar summaries",
    "SummEvalSummarization.v2": "Given a news summary, retrieve other semantically similar summaries",
}
# The bundled demo tasks (moee_exp.scoring.demo_tasks) stand in for a paper dataset of their type: they take its instruction,
# so a smoke run under protocol=paper prompts as the paper does (and as the public-code fixture was run).
DEMO_NAMESAKES = {
    "MoEEDemoSTS": "STS12",
    "MoEEDemoClassification": "EmotionClassification",
    "MoEEDemoClustering": "TwentyNewsgroupsClustering",
    "MoEEDemoPairClassification": "TwitterSemEval2015",
    "MoEEDemoReranking": "AskUbuntuDupQuestions",
    "MoEEDemoSummarization": "SummEval",
}


def _side(entry, prompt_type) -> str | None:
    """One entry (str or {query, document}) for this side of the task; prompt_type is mteb's PromptType or None."""
    if entry is None or isinstance(entry, str):
        return entry
    side = getattr(prompt_type, "value", prompt_type) or "query"
    side = {"corpus": "document", "passage": "document"}.get(side, side)
    return entry.get(side)


@lru_cache(maxsize=None)
def metadata_prompt(task_name: str):
    """mteb's ``metadata.prompt`` of a registered task (None if it has none or the task is not mteb's). Read once
    per name: metadata is the task class's, and mteb.get_task builds and seeds a new task object at each call (a
    demo task's namesake is looked up at every encode call)."""
    import mteb

    try:
        return mteb.get_task(task_name).metadata.prompt
    except (KeyError, ValueError):
        return None


def e5_instruction(task_name: str, prompt: object = None):
    """The E5 entry of a task: its mteb metadata prompt if any (``prompt``, or looked up), else ``E5_TABLE``."""
    name = DEMO_NAMESAKES.get(task_name, task_name)
    if prompt is None or name != task_name:
        prompt = metadata_prompt(name)
    return prompt if prompt else E5_TABLE.get(name)


class Instructions:
    """(task metadata, prompt type) -> the formatted instruction string ('' for none)."""

    def __init__(self, mode: str = "none", table: Mapping | None = None, fmt: str = "gritlm"):
        if mode not in MODES:
            raise ValueError(f"instructions={mode!r} is not one of {MODES}")
        if fmt not in FORMATS:
            raise ValueError(f"instruction_format={fmt!r} is not one of {tuple(FORMATS)}")
        self.mode, self.table, self.fmt = mode, dict(table or {}), fmt
        self._warned: set[str] = set()

    def raw(self, task_name: str, prompt_type=None, metadata_prompt_=None) -> str | None:
        if self.mode == "none":
            return None
        entry = self.table.get(task_name)
        if entry is None and self.mode == "e5":
            entry = e5_instruction(task_name, metadata_prompt_)
        return _side(entry, prompt_type)

    def __call__(self, task_metadata=None, prompt_type=None) -> str:
        if self.mode == "none" or task_metadata is None:
            return ""
        name = task_metadata.name
        instruction = self.raw(name, prompt_type, getattr(task_metadata, "prompt", None))
        if instruction is None:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("%s has no %s instruction: its texts are embedded without one", name, self.mode)
            return ""
        return format_instruction(instruction, self.fmt)


def format_instruction(instruction: str, fmt: str = "gritlm") -> str:
    """The public code strips ': \\n' from both ends, then formats; '' gives the format's empty form."""
    with_text, empty = FORMATS[fmt]
    instruction = instruction.strip(": \n")
    return with_text.format(instruction=instruction) if instruction else empty
