"""HS and RW (and the ablation poolings) against transformers' own outputs, for every tiny MoE family."""

import numpy as np
import pytest
import torch
from conftest import TINY_FAMILIES

from devtools.coverage import TEXTS as COVERAGE_TEXTS
from moee_exp.features.extract import FEATURES, extract, pooled_positions

# one xdist worker runs this module: its module-scoped fixture is built once, not once per worker
pytestmark = pytest.mark.xdist_group("test_extract")

TEXTS = COVERAGE_TEXTS  # short, long, one-character and non-Latin texts (shared with the coverage table)


def reference(lm, text: str) -> dict[str, torch.Tensor]:
    """One text, no padding, through the stock CausalLM with output_hidden_states / output_router_logits."""
    from transformers import AutoModelForCausalLM

    model = reference.models.get(lm.name_or_path)
    if model is None:
        model = reference.models[lm.name_or_path] = AutoModelForCausalLM.from_pretrained(
            lm.name_or_path, dtype=torch.float32
        ).eval()
    ids = lm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        out = model(**ids, output_hidden_states=True, output_router_logits=True)
    states = torch.stack(out.hidden_states)[:, 0]  # (layers + 1, tokens, hidden)
    logits = torch.stack(out.router_logits)  # (moe layers, tokens, experts), pre-softmax
    return {
        "hs": states[-1, -1],
        "hs_mean_tokens": states[-1].mean(0),
        "hs_mean_layers": states[:, -1].mean(0),
        "hs_mean_tokens_layers": states.mean((0, 1)),
        "rw": logits[:, -1],
        "rw_mean_tokens": logits.mean(1),
    }


reference.models = {}


@pytest.fixture(scope="module")
def refs(tiny_lm):
    return {fam: [reference(tiny_lm(fam), t) for t in TEXTS] for fam in TINY_FAMILIES}


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_hs_rw_match_transformers(tiny_lm, refs, family, padding_side, batch_size):
    """Each text alone (batch 1), then batched in length order whatever the lengths (max_padding=1): batches of 3
    and one batch of 7 (in tiny's tokens: 55, 26, 20 | 20, 11, 2 | 1, and "x" padded to 55)."""
    lm = tiny_lm(family)
    feats = extract(lm, TEXTS, batch_size=batch_size, padding_side=padding_side, max_padding=1.0, progress=False)
    assert feats["rw"].shape == (len(TEXTS), len(lm.routers), lm.n_experts)
    for i, ref in enumerate(refs[family]):
        np.testing.assert_allclose(feats["hs"][i], ref["hs"].numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(feats["rw"][i], ref["rw"].numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["tiny", "tiny_qwen2_moe", "tiny_deepseek_v3", "tiny_deepseek_moe"])
def test_ablation_poolings_match_transformers(tiny_lm, refs, family):
    feats = extract(tiny_lm(family), TEXTS, batch_size=3, padding_side="left", features=list(FEATURES), progress=False)
    assert set(feats) == set(FEATURES)
    for i, ref in enumerate(refs[family]):
        for name in FEATURES:
            np.testing.assert_allclose(feats[name][i], ref[name].numpy(), atol=1e-5, rtol=0, err_msg=name)


def test_features_do_not_depend_on_batch_mates(tiny_lm):
    """max_padding=1 keeps the batch-mates (length batching alone would have put the target in a batch of its own
    in `other`): in tiny's tokens, `crowd` batches it (19) with 20 and 11, right-padded, `other` with 55 and 2,
    left-padded."""
    lm = tiny_lm("tiny")
    target = "The same sentence in two different batches."
    alone = extract(lm, [target], batch_size=1, progress=False)
    crowd = extract(lm, TEXTS[:3] + [target] + TEXTS[3:], batch_size=3, padding_side="right", max_padding=1.0,
                    progress=False)
    other = extract(lm, [TEXTS[2], target, TEXTS[1]], batch_size=3, padding_side="left", max_padding=1.0,
                    progress=False)
    for got in (crowd, other):
        i = 3 if got is crowd else 1
        np.testing.assert_allclose(got["hs"][i], alone["hs"][0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(got["rw"][i], alone["rw"][0], atol=1e-5, rtol=0)


def test_features_are_informative(tiny_lm):
    """Guards the reference tests against a trivially equal pair (e.g. all zeros)."""
    feats = extract(tiny_lm("tiny"), TEXTS, progress=False)
    assert np.abs(feats["rw"]).min() > 0
    assert np.linalg.matrix_rank(feats["hs"]) == len(TEXTS)


def test_pooled_positions_left_and_right():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
    assert pooled_positions(mask).tolist() == [2, 3, 3]


def test_routers_found_per_moe_layer_only(tiny_lm):
    # qwen2 tiny has a dense layer 1 (mlp_only_layers); deepseek_v3 tiny a dense layer 0 (first_k_dense_replace).
    assert [r.name for r in tiny_lm("tiny_qwen2_moe").routers] == [f"layers.{i}.mlp.gate" for i in (0, 2, 3)]
    assert [r.name for r in tiny_lm("tiny_deepseek_v3").routers] == ["layers.1.mlp.gate", "layers.2.mlp.gate"]
    # DeepSeekMoE (our class): layer 0 dense; its shared experts are MLPs, not routers
    assert [r.name for r in tiny_lm("tiny_deepseek_moe").routers] == ["layers.1.mlp.gate", "layers.2.mlp.gate"]
