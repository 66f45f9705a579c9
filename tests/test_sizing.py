"""Today's checkpoints: RW dims and memory from their config on the meta device; model.device=all_gpus."""

import re

import pytest
import torch
import yaml
from conftest import ROOT

from devtools.sizing import GIB, config_from_facts, size_of
from moee_exp.errors import ConfigError
from moee_exp.features.loading import check_device

TODAY = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((ROOT / "conf/model").glob("*.yaml"))
         if "hub_config:" in p.read_text()}


def test_todays_checkpoints_are_all_there():
    assert {c["name_or_path"] for c in TODAY.values()} >= {
        "Qwen/Qwen3-30B-A3B", "openai/gpt-oss-20b", "allenai/OLMoE-1B-7B-0125", "mistralai/Mixtral-8x7B-v0.1",
        "deepseek-ai/DeepSeek-V2-Lite", "microsoft/Phi-3.5-MoE-instruct", "ibm-granite/granite-3.1-3b-a800m-base"}


@pytest.mark.parametrize("name", sorted(TODAY))
def test_yaml_comment_states_what_the_meta_model_gives(name):
    """The RW dims and memory written in conf/model/<name>.yaml are what its config builds (no hand arithmetic)."""
    text = (ROOT / "conf/model" / f"{name}.yaml").read_text()
    s = size_of(config_from_facts(TODAY[name]["hub_config"]))
    layers, experts, dims = map(int, re.search(r"(\d+) MoE layers x (\d+) experts -> RW has (\d+) dims", text).groups())
    assert (layers, experts, dims) == (s.n_routers, s.n_experts, s.rw_dims)
    assert f"bf16 {s.bf16_gb:.1f} GiB" in text and f"nf4 {s.nf4_gb:.1f} GiB" in text


def test_meta_size_equals_the_built_model(tiny_lm):
    """On a tiny family: the meta-device count equals the real model's routers and parameters."""
    lm = tiny_lm("tiny_qwen2_moe")
    s = size_of(lm.model.config)
    assert (s.n_routers, s.n_experts) == (len(lm.routers), lm.n_experts) == (3, 8)
    n = sum(p.numel() for p in lm.model.parameters())
    assert s.params == n and s.bf16_gb == pytest.approx(2 * n / GIB)
    assert s.nf4_gb < s.bf16_gb


def test_paper_facts_match_the_known_rw_dims():
    # Qwen3-30B-A3B: 48 layers, all MoE, 128 experts; DeepSeek-V2-Lite: layer 0 dense, 26 x 64
    assert size_of(config_from_facts(TODAY["qwen3_moe"]["hub_config"])).rw_dims == 6144
    assert size_of(config_from_facts(TODAY["deepseek_v2_lite"]["hub_config"])).rw_dims == 1664


def test_all_gpus_is_a_device_and_needs_a_gpu_here():
    check_device("all_gpus", here=False)  # valid name: a login node may configure a GPU job
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="all_gpus spreads the model"):
        check_device("all_gpus")
    with pytest.raises(ConfigError, match="all_gpus"):
        check_device("gpu0")
