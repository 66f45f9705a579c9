"""Every experts implementation of the installed transformers gives our extraction the same HS / RW (to 1e-5), and
``model.experts_implementation`` reaches the loaded model (issue 20)."""

import pytest
import torch
from conftest import tiny_model_cfg

from moee_exp.features.extract import DEFAULT_FEATURES, forward_features
from moee_exp.features.featurize import model_path
from moee_exp.features.loading import load_model

IMPLEMENTATIONS = ("eager", "grouped_mm", "batched_mm")
FAMILIES = ("tiny", "tiny_qwen2_moe", "tiny_mixtral", "tiny_qwen3_moe")


def padded_batch(vocab: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (3, 17), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding, as our extraction pads
    mask[2, :11] = 0
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_hs_and_rw_equal_across_experts_implementations(tiny_lm, family):
    lm = tiny_lm(family)
    if not lm.model._can_set_experts_implementation():
        pytest.skip(f"{type(lm.model).__name__} has one experts implementation")
    ids, mask = padded_batch(lm.model.config.vocab_size)
    before = lm.model.config._experts_implementation
    feats = {}
    try:
        for impl in IMPLEMENTATIONS:
            lm.model.set_experts_implementation(impl)
            assert lm.model.config._experts_implementation == impl
            with torch.inference_mode():
                feats[impl] = forward_features(lm, ids, mask, DEFAULT_FEATURES)
    finally:
        lm.model.set_experts_implementation(before)
    for impl in IMPLEMENTATIONS[1:]:
        for name in DEFAULT_FEATURES:
            torch.testing.assert_close(feats[impl][name], feats["eager"][name], rtol=0, atol=1e-5)


@pytest.mark.parametrize("impl", ["eager", "batched_mm"])
def test_the_config_key_selects_the_implementation(impl):
    cfg = tiny_model_cfg("tiny")
    lm = load_model(model_path(cfg), experts_implementation=impl)
    assert lm.model.config._experts_implementation == impl
    assert lm.settings["experts_implementation"] == impl


def test_auto_picks_this_device_types_default():
    from moee_exp.features.loading import DEFAULT_EXPERTS

    cfg = tiny_model_cfg("tiny")
    lm = load_model(model_path(cfg))
    assert lm.model.config._experts_implementation == DEFAULT_EXPERTS["cpu"]


def test_an_unknown_implementation_is_a_config_error():
    from moee_exp.errors import ConfigError

    cfg = tiny_model_cfg("tiny")
    with pytest.raises(ConfigError, match="model.experts_implementation"):
        load_model(model_path(cfg), experts_implementation="fastest_please")
