"""The protocol group (paper | clean): instructions, text handling, standardization, RW activation, router
quantization, and that every row / identity / name records the protocol."""

from pathlib import Path

import numpy as np
import pytest
from jobs import compose
import torch

from moee_exp.errors import ConfigError
from moee_exp.features.instructions import E5_TABLE, Instructions, format_instruction
from moee_exp.features.prompts import TEMPLATES, apply_prompt
from moee_exp.jobs.config import validate
from moee_exp.scoring.fuse import standardize_block

ROOT = Path(__file__).resolve().parents[1]

# The public code's E5 strings (eval_mteb.py SET_TO_TASK_TO_DS_TO_PROMPT['e5']) for the paper's 19 datasets: facts
# carried over to check both of our sources (mteb's task metadata, our E5_TABLE) against.
_STS = "Retrieve semantically similar text."
PUBLIC_E5 = {
    "EmotionClassification": "Classify the emotion expressed in the given Twitter message into one of the six "
    "emotions: anger, fear, joy, love, sadness, and surprise",
    "ToxicConversationsClassification": "Classify the given comments as either toxic or not toxic",
    "TweetSentimentExtractionClassification": "Classify the sentiment of a given tweet as either positive, negative, "
    "or neutral",
    "MedrxivClusteringS2S": "Identify the main category of Medrxiv papers based on the titles",
    "TwentyNewsgroupsClustering": "Identify the topic or theme of the given news articles",
    "TwitterSemEval2015": "Retrieve tweets that are semantically similar to the given tweet",
    "TwitterURLCorpus": "Retrieve tweets that are semantically similar to the given tweet",
    "AskUbuntuDupQuestions": {"query": "Retrieve duplicate questions from AskUbuntu forum",
                              "document": "Retrieve duplicate questions from AskUbuntu forum"},
    "SciDocsRR": {"query": "Given a title of a scientific paper, retrieve the titles of other relevant papers",
                  "document": "Given a title of a scientific paper, retrieve the titles of other relevant papers"},
    "StackOverflowDupQuestions": {"query": "Retrieve duplicate questions from StackOverflow forum",
                                  "document": "Retrieve duplicate questions from StackOverflow forum"},
    **{n: _STS for n in ("STS12", "STS13", "STS14", "STS15", "STS16", "BIOSSES", "SICK-R", "STSBenchmark")},
    "SummEval": "Given a news summary, retrieve other semantically similar summaries",
}


def test_every_paper_dataset_gets_the_public_codes_instruction_from_one_of_our_two_sources():
    import mteb

    paper = (ROOT / "conf/tasks/paper.yaml").read_text()
    instructions = Instructions("e5")
    for name, public in PUBLIC_E5.items():
        assert name in paper
        meta = mteb.get_task(name).metadata
        sides = public if isinstance(public, dict) else {"query": public, "document": public}
        for side, text in sides.items():
            if meta.prompt:  # where mteb's metadata has a string, it is the public code's, and our table is not used
                assert name not in E5_TABLE
                got = meta.prompt if isinstance(meta.prompt, str) else meta.prompt[side]
                assert got == text, name
            else:
                assert E5_TABLE[name] == text, name
            prompt_type = side if isinstance(public, dict) else None
            assert instructions(meta, prompt_type) == "<|user|>\n" + text + "\n<|embed|>\n"


def test_instruction_modes_and_query_document_entries():
    import mteb

    meta = mteb.get_task("AskUbuntuDupQuestions").metadata
    assert Instructions("none")(meta, "query") == ""
    custom = Instructions("custom", {"AskUbuntuDupQuestions": {"query": "Find dups:", "document": ""}})
    assert custom(meta, "query") == "<|user|>\nFind dups\n<|embed|>\n"  # ': \n' stripped at the ends, as the public code
    assert custom(meta, "document") == "<|embed|>\n"  # an empty entry: the format's empty form
    assert custom(mteb.get_task("STS12").metadata, None) == ""  # custom: only the table's tasks
    override = Instructions("e5", {"STS12": "Mine"})
    assert override(mteb.get_task("STS12").metadata) == format_instruction("Mine")
    # the demo tasks take their namesake paper dataset's instruction (what the public-code fixture was run with)
    from moee_exp.scoring.demo_tasks import DEMO_TASKS

    assert Instructions("e5")(DEMO_TASKS["MoEEDemoSTS"].metadata) == format_instruction(_STS)


def test_paper_text_handling_puts_the_instruction_inside_the_template():
    inst = format_instruction(_STS)
    got = apply_prompt("a_b said \"hi\" ", TEMPLATES["prompteol"], instruction=inst, mode="paper")
    assert got == "This sentence : \"<|user|>\nRetrieve semantically similar text.\n<|embed|>\na b said 'hi' .\" means in one word:\""
    # no strip, no '.' for an empty text without instruction, '.' after the instruction's newline for an empty text
    assert apply_prompt("", TEMPLATES["none"], mode="paper") == '""'
    assert apply_prompt("", TEMPLATES["none"], instruction=inst, mode="paper").endswith("<|embed|>\n.\"")
    # clean: strip, empty -> '.', and '_' -> ' ' as before
    assert apply_prompt(" x_y ", TEMPLATES["none"]) == '"x y."'
    assert apply_prompt("", TEMPLATES["none"]) == '"."'


def test_paper_text_handling_never_truncates(tiny_lm):
    from moee_exp.features.extract import extract, prompt_texts

    lm = tiny_lm("tiny")
    long = " ".join(["word"] * 200)
    clean = prompt_texts([long], TEMPLATES["none"], lm.tokenizer, max_length=32)
    paper = prompt_texts([long], TEMPLATES["none"], lm.tokenizer, max_length=32, mode="paper")
    assert clean.n_truncated == 1 and paper.n_truncated == 0
    assert len(lm.tokenizer(paper.texts[0])["input_ids"]) > 32
    whole = extract(lm, paper.texts, max_length=32, truncate=False, progress=False)
    cut = extract(lm, paper.texts, max_length=32, progress=False)
    assert not np.allclose(whole["hs"], cut["hs"])


def test_batch_standardization_is_the_public_codes_torch_zscore():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * 5 + 3
    x[:, 2] = 1.0  # a constant feature: 0 / (0 + 1e-8) = 0
    got = standardize_block(x, "batch", 128)
    t = torch.tensor(x)
    ref = torch.cat([(b - b.mean(0, keepdim=True)) / (b.std(0, keepdim=True) + 1e-8) for b in t.split(128)])
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-12)
    # 300 = 2*128 + 44; a final batch of one text: torch's std is NaN, the public code sets it to 0
    assert not standardize_block(x[:129], "batch", 128)[128].any()




@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], {"protocol.name": "paper", "emb.standardize": "batch", "emb.rw_activation": "logits",
              "model.quantization": "none", "protocol.instructions": "e5", "protocol.text": "paper"}),
        (["emb=hs"], {"emb.standardize": "none"}),
        (["emb=moee_concat"], {"emb.standardize": "batch"}),
        (["emb=rw", "emb.standardize=none"], {"emb.standardize": "none"}),  # each setting overridable on its own
        (["model=deepseek_moe"], {"emb.rw_activation": "softmax", "model.quantization": "4bit",
                                  "model.quantize_routers": False}),
        (["model=olmoe"], {"emb.rw_activation": "logits", "model.quantization": "4bit",
                           "model.quantize_routers": True}),
        (["model=tiny_deepseek_moe"], {"emb.rw_activation": "softmax", "model.quantization": "none"}),
        (["protocol=clean"], {"emb.standardize": "none", "emb.rw_activation": "logits", "protocol.instructions": "none",
                              "protocol.text": "clean", "protocol.sum_scoring": "similarity"}),
        (["protocol=clean", "emb=moee_concat"], {"emb.standardize": "text"}),
        (["protocol=clean", "model=deepseek_moe"], {"emb.rw_activation": "logits", "model.quantization": "none"}),
        (["protocol=clean", "protocol.instructions=e5"], {"protocol.instructions": "e5", "protocol.text": "clean"}),
        (["+experiment=paper_main"], {"protocol.name": "paper"}),
    ],
)
def test_protocol_sets_the_other_groups_keys(overrides, expected):
    from omegaconf import OmegaConf

    cfg = compose(*overrides)
    validate(cfg)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, (overrides, key)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["protocol.instructions=e6"], "protocol.instructions"),
        (["protocol.text=raw"], "protocol.text"),
        (["protocol.instructions=custom"], "instruction_table"),
        (["model.paper_rw_activation=relu"], "rw_activation=.relu"),
    ],
)
def test_bad_protocol_settings_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(*overrides))


def test_rows_names_and_identity_record_the_protocol():
    from moee_exp.jobs.config import read_job
    from moee_exp.jobs.resume import job_identity, row_key
    from moee_exp.jobs.runner import row_labels, run_name
    from moee_exp.scoring.spec import MoEESpec

    paper, clean = (read_job(compose(*o), here=False) for o in ((), ("protocol=clean",)))
    lp, lc = row_labels(paper), row_labels(clean)
    assert (lp["protocol"], lc["protocol"]) == ("paper", "clean")
    assert lp["instructions"] == "e5" and lp["sum_scoring"] == "paper" and lc["sum_scoring"] == "similarity"
    assert run_name(paper).endswith("-paper") and run_name(clean).endswith("-clean")
    keys = {row_key(job_identity(read_job(compose(*o), here=False)))
            for o in ((), ("protocol=clean",), ("protocol.instructions=none",), ("protocol.text=clean",))}
    assert len(keys) == 4
    # the name says what the kind and protocol do not imply, and nothing else
    spec = MoEESpec.create("m", kind="hs", prompt="none")
    paper = {"name": "paper", "instructions": "e5", "text": "paper", "sum_scoring": "paper"}
    assert MoEESpec.create("m", kind="hs", prompt="none", protocol=paper, quantization="4bit",
                           quantize_routers=True).name == "m-hs-none-paper"
    # the paper protocol's name without its 4-bit model is another computation, and says so
    assert MoEESpec.create("m", kind="hs", prompt="none", protocol=paper).name == \
        "m-hs-none-paper-quantization=none-quantize_routers=False"
    assert spec.name == "m-hs-none-clean"
    assert MoEESpec.create("m", kind="hs", prompt="none", protocol={"instructions": "e5"}).name == \
        "m-hs-none-clean-instructions=e5"
    assert MoEESpec.create("m", kind="hs", prompt="none", standardize="text").name == "m-hs-none-clean-standardize=text"
    assert MoEESpec.create("m", kind="moee_sum", alpha=0.5).name == "m-moee_sum-a0.5-prompteol-clean"
    # settings that change a score name a computation of their own (mteb's result folder holds one computation)
    assert MoEESpec.create("m", kind="hs", quantization="4bit", max_length=64).name == \
        "m-hs-prompteol-clean-max_length=64-quantization=4bit"


def test_the_instruction_keys_the_feature_cache(tmp_path):
    from conftest import tiny_model_cfg

    from moee_exp.features.cache import FeatureCache, identity_hash
    from moee_exp.features.featurize import Featurizer

    feat = Featurizer(tiny_model_cfg(), TEMPLATES["none"], cache=FeatureCache(tmp_path))
    paper = Featurizer(tiny_model_cfg(), TEMPLATES["none"], cache=FeatureCache(tmp_path), text_mode="paper")
    hashes = {identity_hash(f.namespace(i).identity) for f in (feat, paper) for i in ("", "<|embed|>\n")}
    assert len(hashes) == 4
    texts = ["a cat", "a dog"]
    plain, instructed = feat(texts), feat(texts, instruction=format_instruction(_STS))
    assert not np.allclose(plain["hs"], instructed["hs"])
    np.testing.assert_array_equal(feat(texts, instruction=format_instruction(_STS))["hs"], instructed["hs"])


def test_encoder_prompts_each_side_with_its_own_instruction():
    import mteb

    from moee_exp.scoring.encoder import MoEEEncoder

    seen = []

    def featurizer(texts, desc=None, instruction=""):
        seen.append(instruction)
        return {"hs": np.ones((len(texts), 4)), "rw": np.ones((len(texts), 2, 3))}

    table = {"AskUbuntuDupQuestions": {"query": "Q", "document": "D"}}
    enc = MoEEEncoder(featurizer, "hs", instructions=Instructions("custom", table))
    meta = mteb.get_task("AskUbuntuDupQuestions").metadata
    for side in ("query", "document"):
        enc.encode([{"text": ["x"]}], task_metadata=meta, hf_split="test", hf_subset="default", prompt_type=side)
    assert seen == [format_instruction("Q"), format_instruction("D")]
    assert enc.mteb_model_meta.use_instructions


def test_router_nf4_round_trip_is_what_a_bitsandbytes_4bit_gate_computes():
    bnb = pytest.importorskip("bitsandbytes")
    from moee_exp.features.loading import nf4_round_trip
    from moee_exp.features.routers import Router

    torch.manual_seed(0)
    w = torch.randn(8, 64)
    gate = torch.nn.Linear(64, 8, bias=False)
    gate.weight.data.copy_(w)
    q = bnb.nn.Linear4bit(64, 8, bias=False, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, compress_statistics=True, quant_type="nf4", blocksize=64)
    q = q.to("cpu")
    x = torch.randn(5, 64)
    nf4_round_trip([Router("gate", gate)])
    assert not torch.equal(gate.weight, w)
    torch.testing.assert_close(gate(x), q(x), rtol=0, atol=1e-6)
