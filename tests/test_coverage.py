"""docs/coverage.md's MoE coverage table is what the installed transformers gives: each row regenerated.

A row per family: a tiny model from the family's own config class, our HS/RW against the model's own
hidden_states / router_logits (each text alone; all 7 in one batch, left and right padded). A transformers upgrade
that adds a family, changes one, or breaks one makes a test here fail and shows the new row.
"""

import re
from pathlib import Path

import pytest
import torch

from devtools.coverage import moe_model_types, parse_table
from moee_exp.errors import UnsupportedRouterError, error_line
from moee_exp.features.router_check import check_routers
from moee_exp.features.routers import Router

PAGE = Path(__file__).resolve().parents[1] / "docs" / "coverage.md"
BLOCK = re.search(r"<!-- moe-coverage:start -->(.*?)<!-- moe-coverage:end -->", PAGE.read_text(), re.S).group(1)
ROWS = parse_table(BLOCK)


def test_table_lists_every_moe_family_of_installed_transformers():
    assert sorted(ROWS) == moe_model_types(), "regenerate with: python scripts/moe_coverage.py --write"


def test_summary_line_counts_the_table_on_the_installed_transformers():
    from devtools.coverage import summary

    assert summary(ROWS) in BLOCK, "regenerate with: python scripts/moe_coverage.py --write"


def test_no_family_gives_wrong_features():
    """'differs' would be silently wrong RW/HS: every family either matches or is refused with an error."""
    assert not [mt for mt, row in ROWS.items() if "| differs |" in row]
    assert sum("| ok |" in row for row in ROWS.values()) >= 40


@pytest.mark.parametrize("model_type", sorted(ROWS))
def test_row_regenerates(model_type, tmp_path):
    from devtools.coverage import check_family

    assert check_family(model_type, tmp_path).markdown() == ROWS[model_type]


def test_router_self_check_refuses_a_wrong_router(tiny_lm):
    """Router discovery by shape picking the wrong module is caught at load time, with a one-line error."""
    lm = tiny_lm("tiny")
    assert check_routers(lm) == "router_logits"
    swapped = [Router(r.name, lm.routers[(i + 1) % len(lm.routers)].module) for i, r in enumerate(lm.routers)]
    wrong = type(lm)(lm.model, lm.tokenizer, swapped, lm.name_or_path, lm.device, lm.settings)
    with pytest.raises(UnsupportedRouterError, match="not a linear map") as err:
        check_routers(wrong)
    assert "\n" not in error_line(err.value)
    extra = type(lm)(lm.model, lm.tokenizer, lm.routers + [Router("extra", torch.nn.Linear(4, 4))], lm.name_or_path,
                     lm.device, lm.settings)
    with pytest.raises(UnsupportedRouterError, match="refuses this family"):
        check_routers(extra)


def test_expert_count_read_from_a_nested_config():
    """DBRX names its expert count in ffn_config only: without it the family would be called dense."""
    from transformers import DbrxConfig

    from moee_exp.features.routers import expert_count

    assert expert_count(DbrxConfig(ffn_config={"moe_num_experts": 6})) == 6


def test_router_check_refuses_encoder_decoder_and_uncalled_routers(tiny_lm):
    """Routers split over an encoder and a decoder, or a router-shaped module the forward never calls, are refused."""
    lm = tiny_lm("tiny")
    split = [Router(("encoder." if i % 2 else "decoder.") + r.name, r.module) for i, r in enumerate(lm.routers)]
    with pytest.raises(UnsupportedRouterError, match="encoder-decoder"):
        check_routers(type(lm)(lm.model, lm.tokenizer, split, lm.name_or_path, lm.device, lm.settings))
    uncalled = lm.routers + [Router("unused", torch.nn.Linear(4, 4))]
    with pytest.raises(UnsupportedRouterError, match="not called on text"):
        check_routers(type(lm)(lm.model, lm.tokenizer, uncalled, lm.name_or_path, lm.device, lm.settings))


def test_post_softmax_router_logits_are_recognised():
    """Gemma 4 records softmax(logits) as router_logits: compared as probabilities, never mistaken for logits."""
    from moee_exp.features.router_check import is_probabilities

    logits = torch.randn(3, 6)
    assert is_probabilities(logits.softmax(-1)) and not is_probabilities(logits)
