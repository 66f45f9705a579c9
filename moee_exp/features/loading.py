"""Load a MoE LLM (hub id, HF cache or local dir; optional bitsandbytes 4/8-bit) with its tokenizer and routers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..checks import Checked, choice
from ..errors import ConfigError, MissingDependencyError, ModelNotFoundError, NotAMoEModelError
from .quant_experts import IMPLEMENTATION as NF4_EXPERTS
from .quant_experts import check_quantizable, quantize_fused_experts
from .router_check import check_routers
from .routers import Router, expert_count, find_routers

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = ("none", "4bit", "8bit")
RW_ACTIVATIONS = ("logits", "softmax")  # what RW is: router logits, or their softmax over each layer's experts


@dataclass
class ModelConfig(Checked):
    group = "model"

    name: str = "model"  # short name used in results, tables and W&B
    name_or_path: str | None = None  # hub id or local dir
    tiny: Any = None  # {model_type, seed, vocab_size, config}: build a tiny random model instead
    revision: str | None = None
    dtype: str = field(default="auto", metadata=choice(("auto", *DTYPES)))  # auto = float32 on CPU, bfloat16 on GPU
    quantization: str = field(default="none", metadata=choice(QUANTIZATIONS))  # none | 4bit (nf4) | 8bit (bitsandbytes)
    device: str = "auto"
    max_length: int = field(default=512, metadata={"min": 8})  # at most the model's max_position_embeddings
    batch_size: int = field(default=32, metadata={"min": 1})
    padding_side: str = field(default="left", metadata=choice(("left", "right")))
    trust_remote_code: bool = False
    experts_implementation: str = "auto"  # auto (fastest per device type) | eager | grouped_mm | batched_mm | ...
    cache_dir: str = "${paths.cache_dir}"
    # The checkpoint's config.json values (facts, for sizing it without the hub: scripts/model_sizes.py)
    hub_config: Any = None
    # 4bit: also round the routers' weights through NF4 (double quant), as the public code's quantized gates are;
    # false keeps them exact (RW read from full-precision routers). Set by protocol=paper.
    quantize_routers: bool = False
    # Per-model facts of the public code, read by protocol=paper (conf/protocol/paper.yaml):
    # what its gate returns as RW: logits (OLMoE, Qwen) | softmax (DeepSeekMoE)
    paper_rw_activation: str = field(default="logits", metadata=choice(RW_ACTIVATIONS))
    # how it loads the model (NF4 4-bit); tiny models: none (CPU smoke runs)
    paper_quantization: str = field(default="4bit", metadata=choice(QUANTIZATIONS))
    paper_quantize_routers: bool = True  # its gate is an nn.Linear, so bitsandbytes quantizes it (DeepSeekMoE: no)

    def check(self) -> None:
        check_device(self.device, "model.device", here=False)  # a device name; whether this machine has it: at load
        check_tiny(self.tiny)


def check_tiny(tiny) -> None:
    """model.tiny: None, or a tiny-model spec {model_type, seed, vocab_size, config} (conf/model/tiny.yaml)."""
    if tiny is None:
        return
    if not isinstance(tiny, Mapping) or not isinstance(tiny.get("model_type"), str):
        raise ConfigError(
            f"model.tiny={tiny!r} is not a tiny-model spec: use model=tiny (or another tiny_* option), or "
            "model.tiny=null with model.name_or_path set"
        )
    for key, kind in (("seed", int), ("vocab_size", int), ("config", Mapping)):
        value = tiny.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            raise ConfigError(f"model.tiny.{key}={value!r} must be a {kind.__name__}; see conf/model/tiny.yaml")
    if not 64 <= int(tiny.get("vocab_size", 512)) <= 1_000_000:
        raise ConfigError("model.tiny.vocab_size must be between 64 and 1000000 (tiny default: 512)")


def model_config(model) -> ModelConfig:
    """A ModelConfig from itself or from a mapping of its fields (a plain dict, or a config node), for callers of
    the feature path that are not the runner; an unknown key is an error, not ignored."""
    if isinstance(model, ModelConfig):
        return model
    if hasattr(model, "_get_node"):  # an omegaconf DictConfig: its resolved values
        from omegaconf import OmegaConf

        model = OmegaConf.to_container(model, resolve=True)
    names = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(model) - names)
    if unknown:
        raise ConfigError(f"model: unknown key(s) {', '.join(unknown)}; the keys are those of conf/model/tiny.yaml")
    return ModelConfig(**dict(model))


@dataclass
class LoadedModel:
    model: torch.nn.Module  # the base model (no LM head): its last_hidden_state is hidden_states[-1]
    tokenizer: object
    routers: list[Router]
    name_or_path: str
    device: torch.device
    settings: dict = field(default_factory=dict)

    @property
    def n_experts(self) -> int:
        return self.routers[0].module.weight.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.routers[0].module.weight.shape[1]


def check_device(device: str, key: str = "model.device", here: bool = True) -> None:
    """``device`` names a torch device (auto, cpu, cuda, cuda:N, mps) and, with ``here``, one this machine has.

    Without the check, model.device=cuda on a machine without CUDA ends in torch's AssertionError at model load.
    """
    if device == "auto":
        return
    if device == ALL_GPUS:
        if here and not (torch.cuda.is_available() and torch.cuda.device_count() > 0):
            raise ConfigError(f"{key}={ALL_GPUS} spreads the model over this node's CUDA GPUs, but torch sees none; "
                                f"use {key}=auto or cpu")
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{key}={device!r} is not a device: use auto, cpu, cuda, cuda:N, mps or {ALL_GPUS}") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{key}={device!r}: only auto, cpu, cuda, cuda:N, mps and {ALL_GPUS} are supported")
    if not here or dev.type == "cpu":
        return
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{key}={device!r} but this machine has no MPS device; use {key}=auto or cpu")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(
                f"{key}={device!r} but torch sees no CUDA GPU here (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}); use {key}=auto or cpu, or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"{key}={device!r} but this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")


def check_max_length(config, max_length: int, key: str = "model.max_length") -> None:
    """A text of ``max_length`` tokens must fit the model's position range (config.max_position_embeddings):
    beyond it, positions past the range either fail deep inside the model or silently give garbage."""
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise ConfigError(
            f"{key}={max_length} exceeds the model's max_position_embeddings={limit}; set {key}={limit} or less"
        )


# model.device=all_gpus: one model too big for one GPU, its layers spread over all GPUs of this node by accelerate
# (transformers' device_map="auto"); inputs go to the GPU holding the embeddings, hooks pool on each layer's GPU.
ALL_GPUS = "all_gpus"


def resolve_device(device: str) -> torch.device:
    if device == ALL_GPUS:
        return torch.device("cuda:0")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":  # float32 on CPU (exact, and CPUs are slow in bf16); bf16 on GPU like the paper's runs
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def register_own_configs() -> None:
    """Register the configs of the model types we own (DeepSeekMoE) with AutoConfig, before a config is read."""
    from . import models  # noqa: F401


def register_own_models() -> None:
    """Register our model classes (DeepSeekMoE) with transformers' Auto classes, before a model is built. Done here,
    not at import: it imports transformers' modeling stack (~4 s on 2 cores), which ``import moee_exp`` (a library
    user's), a config check and a job whose features are all cached do not need."""
    from .models import deepseek_moe  # noqa: F401


def _looks_local(name_or_path: str) -> bool:
    return name_or_path.startswith((".", "/", "~")) or Path(name_or_path).expanduser().exists()


_HUB_STATE: dict[str, str] = {}  # "why" the hub is off for this process (set once by hub_offline)


def hub_offline(timeout: float = 3.0) -> str | None:
    """Why the HF hub cannot be used here, or None. HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE say so; otherwise one TCP
    connect to the hub's endpoint (at most ``timeout`` s, once per process) tells whether it is reachable. When it
    is not, the process is switched to huggingface_hub's offline mode, so every later hub call reads the HF cache at
    once instead of retrying for ~30 s per file. Through a configured proxy nothing is probed (the proxy decides)."""
    import os
    import socket
    import sys
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return _HUB_STATE.get("why") or "HF_HUB_OFFLINE=1"
    if "probed" in _HUB_STATE or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                                                   "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    reached: list[bool] = []

    def probe():  # in a thread: a resolver that hangs is bounded by the join below as well
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    _HUB_STATE["probed"] = "yes"
    if reached:
        return None
    _HUB_STATE["why"] = f"{host}:{port} is not reachable from here"
    constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub and transformers (is_offline_mode)
    os.environ["HF_HUB_OFFLINE"] = "1"  # datasets (read at its import) and child processes
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True
    log.debug("the HF hub (%s) is not reachable: models and data are read from the HF cache only", host)
    return _HUB_STATE["why"]


def _load_config(name_or_path: str, revision: str | None, trust_remote_code: bool):
    from transformers import AutoConfig

    register_own_configs()

    if _looks_local(name_or_path) and not (Path(name_or_path).expanduser() / "config.json").exists():
        raise ModelNotFoundError(
            f"model dir {name_or_path!r} does not exist or has no config.json; "
            "set model.name_or_path to a saved checkpoint dir or a hub id"
        )
    offline = None if _looks_local(name_or_path) else hub_offline()
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as err:
        where = f"the HF hub cannot be used ({offline}) and it is not in the HF cache" if offline else \
            "not reachable on the hub or in the HF cache"
        raise ModelNotFoundError(
            f"could not load {name_or_path!r}: not a local dir and {where} ({err.__class__.__name__}). Download it "
            f"once where there is network (`hf download {name_or_path}`) into the HF cache this machine reads "
            "(HF_HOME), or point model.name_or_path at a local dir."
        ) from err


def _check_moe(config, name_or_path: str) -> None:
    if expert_count(config) is None:
        raise NotAMoEModelError(
            f"{name_or_path} ({config.model_type}) is a dense model with no MoE routers, so it has no routing "
            "weights to embed with; use a MoE model such as model=olmoe, qwen_moe or deepseek_moe."
        )


def _require_bitsandbytes(quantization: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f"model.quantization={quantization} needs bitsandbytes: pip install 'moee-exp[quant]' "
            "(or model.quantization=none)"
        ) from err


def check_model(model: ModelConfig | Mapping, reachable: bool = False) -> None:
    """Fail fast, before any dataset is read, on a model that cannot work: a local dir that does not exist or
    has no config.json, a dense model, or 4/8-bit asked for without bitsandbytes. A hub id whose config cannot be
    read now (no hub, not in the HF cache) is left to the load (its features may all be in the feature cache, and
    then it is never loaded), unless ``reachable``: then it raises the ModelNotFoundError the load would."""
    model = model_config(model)
    quantization = model.quantization or "none"
    if quantization != "none":
        _require_bitsandbytes(quantization)
    max_length = int(model.max_length or 512)
    if model.tiny:
        check_max_length(tiny_config(model.tiny), max_length)
        return
    name = model.name_or_path
    if not name:
        return
    trust = bool(model.trust_remote_code)
    try:
        config = _load_config(str(name), model.revision, trust)
    except ModelNotFoundError:
        if reachable or _looks_local(str(name)):
            raise
        log.debug("config of %s not readable now; checked again when the model is loaded", name)
        return
    _check_moe(config, str(name))
    check_max_length(config, max_length)


def tiny_config(spec):
    """The transformers config a tiny spec ({model_type, config, ...}) builds, without building the model."""
    from omegaconf import DictConfig, OmegaConf
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
    if str(spec.get("model_type")) not in CONFIG_MAPPING:  # one we own (deepseek)? (registering ours costs ~0.7 s)
        register_own_configs()
    try:
        return AutoConfig.for_model(str(spec["model_type"]), **dict(spec.get("config") or {}))
    except (ValueError, TypeError, KeyError) as err:
        raise ConfigError(
            f"model.tiny is not a valid tiny model ({err.__class__.__name__}: {err}); "
            "start from conf/model/tiny.yaml"
        ) from None


def _full_precision_names(config, trust_remote_code: bool, quantization: str = "none") -> list[str]:
    """Modules kept out of quantization, found on a weightless (meta) copy of the model: the routers, and linear
    layers with fewer than 64 outputs (e.g. Qwen-MoE's 1-output shared_expert_gate: quantizing it saves nothing,
    and bitsandbytes' CPU kernels reject it). Fused experts that ``quantization`` cannot reach are refused here,
    before any weight is read (moee_exp.features.quant_experts)."""
    from transformers import AutoModel

    with torch.device("meta"):
        skeleton = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    check_quantizable(skeleton, quantization, str(config.model_type))
    small = [n for n, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features < 64]
    return [r.name for r in find_routers(skeleton)] + small


def _quantization_config(quantization: str, config, dtype, trust_remote_code: bool):
    if quantization == "none":
        return None
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"model.quantization={quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    _require_bitsandbytes(quantization)
    from transformers import BitsAndBytesConfig

    # Routers are kept out of bitsandbytes' modules (so RW can be read from their weights by shape, whether a
    # router is an nn.Linear or a bare Parameter); quantize_routers rounds them through NF4 after the load.
    skip = _full_precision_names(config, trust_remote_code, quantization)
    if quantization == "4bit":
        # NF4 with double quantization and the compute dtype as compute dtype: the public code's nf4_config
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


# model.experts_implementation=auto: the experts implementation per device type, the fastest measured for our
# extraction (BENCHMARKS.md, "Experts implementations"); a model class with one implementation keeps it.
DEFAULT_EXPERTS = {"cpu": "eager", "cuda": "grouped_mm"}


def set_experts(model, experts_implementation: str, device: torch.device) -> None:
    """Select the model's experts implementation (transformers' eager / grouped_mm / batched_mm / ...)."""
    impl = DEFAULT_EXPERTS.get(device.type) if experts_implementation == "auto" else experts_implementation
    if impl is None or (experts_implementation == "auto" and not model._can_set_experts_implementation()):
        return
    try:
        model.set_experts_implementation(impl)
    except (ValueError, KeyError, ImportError) as err:
        raise ConfigError(f"model.experts_implementation={experts_implementation!r} cannot be used here: "
                            f"{' '.join(str(err).split())} (auto picks one per device type)") from None


def load_model(
    name_or_path: str,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    quantization: str = "none",
    device: str = "auto",
    trust_remote_code: bool = False,
    experts_implementation: str = "auto",
    quantize_routers: bool = False,
) -> LoadedModel:
    import transformers
    from transformers import AutoModel, AutoTokenizer

    config = _load_config(name_or_path, revision, trust_remote_code)
    _check_moe(config, name_or_path)  # fail before any weights are read
    register_own_models()
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    quant = _quantization_config(quantization, config, torch_dtype, trust_remote_code)
    log.info("loading %s (%s, %s, quantization=%s)", name_or_path, dev, torch_dtype, quantization)
    # The base model is loaded from a CausalLM checkpoint: its load report would list lm_head as "unexpected".
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(
            name_or_path,
            revision=revision,
            dtype=torch_dtype,
            trust_remote_code=trust_remote_code,
            quantization_config=quant,
            device_map="auto" if device == ALL_GPUS else str(dev) if quant is not None else None,
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    if device == ALL_GPUS:
        dev = model.get_input_embeddings().weight.device
    elif quant is None:
        model.to(dev)
    model.eval()
    if quantization == "4bit" and quantize_fused_experts(model, torch_dtype, str(config.model_type)):
        # fused experts in NF4 run through our experts implementation (an eager loop, each expert's matrices
        # dequantized as its Linear4bit would); another implementation would read the freed fused tensors
        if experts_implementation not in ("auto", "eager", NF4_EXPERTS):
            raise ConfigError(f"model.experts_implementation={experts_implementation!r} cannot run NF4 experts "
                              f"(model.quantization=4bit); use auto")
    else:
        set_experts(model, experts_implementation, dev)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:  # padding never reaches a pooled feature; any id will do
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    routers = find_routers(model)
    if quantize_routers and quantization == "4bit":
        nf4_round_trip(routers)
    settings = dict(revision=revision, dtype=str(torch_dtype), quantization=quantization, device=str(dev),
                    experts_implementation=getattr(model.config, "_experts_implementation", None),
                    quantize_routers=bool(quantize_routers and quantization == "4bit"))
    lm = LoadedModel(model, tokenizer, routers, name_or_path, dev, settings)
    log.info("%s: routers checked against %s", name_or_path, check_routers(lm))  # UnsupportedRouterError if wrong
    return lm


def nf4_round_trip(routers) -> None:
    """Replace each router's weight by its NF4 (double-quant, blocksize 64) quantize-dequantize, in place: the
    weight a bitsandbytes Linear4bit gate computes with in the public code (its patched models keep the gates as
    nn.Linear, so bitsandbytes quantizes them). Done through bitsandbytes' own NF4 functions, so it also covers
    routers that transformers 5 holds as bare Parameters, which bitsandbytes would not quantize."""
    import bitsandbytes.functional as bnbf

    with torch.no_grad():
        for router in routers:
            weight = router.module.weight
            packed, state = bnbf.quantize_4bit(weight.data, quant_type="nf4", compress_statistics=True, blocksize=64)
            weight.data.copy_(bnbf.dequantize_4bit(packed, state).to(weight.dtype))
