"""NF4 4-bit for transformers 5's fused MoE experts, exactly as bitsandbytes' ``Linear4bit`` quantizes each expert.

transformers 5 stores a MoE layer's experts as 3-D parameters (``gate_up_proj`` (E, 2I, H), ``down_proj`` (E, H, I),
or their transposes), which bitsandbytes' 4-bit, made for ``nn.Linear``, leaves in full precision. Under transformers
4.x (the paper's public code) each expert was three ``nn.Linear`` (gate, up, down), each quantized by ``Linear4bit``.
Here every expert's matrices are cut back out of the fused tensors in ``nn.Linear`` layout (out, in) — gate and up
as two matrices, so that absmax blocks and double-quant statistics are those of the two Linears — and each is
quantized by bitsandbytes' own ``quantize_4bit`` (NF4, blocksize 64, double quant): the packed bytes and quant state
a ``Linear4bit`` of that expert holds. The forward dequantizes each routed expert's matrices with bitsandbytes'
``dequantize_4bit`` and applies them in the compute dtype, as ``Linear4bit`` does.

It works through transformers' experts interface (``use_experts_implementation``): the forward is registered in
``ALL_EXPERTS_FUNCTIONS`` as ``moee_nf4`` and reads the layout flags the decorator sets (``has_gate``,
``is_transposed``, ``is_concatenated``, ``has_bias``, ``has_post_expert_norm``) and the class's own ``_apply_gate``,
so no family is named here. Before the first experts module of a class is quantized, this forward is checked against
the class's own eager forward on the full-precision weights: a family whose experts do something else (or that is not
on the interface at all) is refused with one line, never left in full precision.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .routers import expert_count

IMPLEMENTATION = "moee_nf4"
BLOCKSIZE = 64  # Params4bit's blocksize: what Linear4bit used in the public code
SMALL = 64  # a matrix with fewer outputs stays full precision, as loading's rule keeps such nn.Linear unquantized
FUSED = ("gate_up_proj", "up_proj", "down_proj")
KINDS = ("gate", "up", "down")


def fused_experts(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules holding experts as fused parameters, in registration order: a parameter of 3 or more dims whose
    leading dim is the config's expert count (not a convolution's kernel)."""

    n = expert_count(model.config)
    if n is None:
        return []
    return [(name, m) for name, m in model.named_modules()
            if not isinstance(m, torch.nn.modules.conv._ConvNd)
            and any(p.dim() >= 3 and p.shape[0] == n for p in m.parameters(recurse=False))]


def on_interface(module: torch.nn.Module) -> bool:
    """Whether a fused experts module is on transformers' experts interface, in a layout this module knows."""
    flags = ("has_gate", "is_transposed", "is_concatenated", "has_bias", "has_post_expert_norm", "num_experts")
    if not all(hasattr(module, f) for f in flags) or not hasattr(module, "config"):
        return False
    names = {n for n, p in module.named_parameters(recurse=False) if p.dim() >= 3}
    want = {"gate_up_proj" if module.has_gate else "up_proj", "down_proj"}
    return names == want


def refusal(model_type: str, module_name: str, module: torch.nn.Module, why: str) -> ConfigError:
    return ConfigError(
        f"model.quantization=4bit cannot quantize {model_type}'s fused experts ({module_name}: "
        f"{type(module).__name__}, {why}); bitsandbytes would leave them in full precision: use model.quantization=none"
    )


def check_quantizable(model: torch.nn.Module, quantization: str, model_type: str) -> int:
    """Raise ConfigError (one line) if ``quantization`` cannot reach every fused experts module of ``model`` (a
    weightless skeleton is enough); return how many there are."""
    modules = fused_experts(model)
    if not modules or quantization == "none":
        return len(modules)
    name, module = modules[0]
    if quantization == "8bit":
        raise ConfigError(
            f"model.quantization=8bit would leave {model_type}'s fused experts ({name}: {type(module).__name__}) in "
            "full precision (bitsandbytes' 8-bit quantizes nn.Linear only): use model.quantization=4bit (NF4 experts) "
            "or none"
        )
    for name, module in modules:
        if not on_interface(module):
            raise refusal(model_type, name, module, "not transformers' experts interface")
    return len(modules)


def _linear_layout(module: torch.nn.Module, e: int) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Expert ``e``'s matrices as the nn.Linear weights (out, in) and biases they were: {kind: (weight, bias)}."""
    def mat(t):
        return t.t() if module.is_transposed else t

    out = {}
    if module.has_gate:
        w = mat(module.gate_up_proj[e])  # (2I, H)
        b = module.gate_up_proj_bias[e] if module.has_bias else None
        if module.is_concatenated:  # [gate; up]
            half = w.shape[0] // 2
            out["gate"] = (w[:half], None if b is None else b[:half])
            out["up"] = (w[half:], None if b is None else b[half:])
        else:  # interleaved rows: gate0, up0, gate1, up1, ...
            out["gate"] = (w[0::2], None if b is None else b[0::2])
            out["up"] = (w[1::2], None if b is None else b[1::2])
    else:
        out["up"] = (mat(module.up_proj[e]), module.up_proj_bias[e] if module.has_bias else None)
    out["down"] = (mat(module.down_proj[e]), module.down_proj_bias[e] if module.has_bias else None)
    return out


class NF4Experts(torch.nn.Module):
    """One experts module's matrices, per kind (gate, up, down) and expert: bitsandbytes' packed NF4 bytes and quant
    state, stacked over the experts; a kind with fewer than 64 outputs keeps its full-precision (E, out, in) weight."""

    def __init__(self, module: torch.nn.Module, compute_dtype: torch.dtype):
        import bitsandbytes.functional as bnbf

        super().__init__()
        self.compute_dtype = compute_dtype
        self.kinds = {}  # kind -> (out, in, quantized)
        n = module.num_experts
        per_expert = [_linear_layout(module, e) for e in range(n)]
        for kind in KINDS:
            if kind not in per_expert[0]:
                continue
            weights = [per_expert[e][kind][0] for e in range(n)]
            biases = [per_expert[e][kind][1] for e in range(n)]
            rows, cols = weights[0].shape
            if biases[0] is not None:
                self.register_buffer(f"{kind}_bias", torch.stack([b.detach() for b in biases]).contiguous())
            if rows < SMALL:
                self.kinds[kind] = (rows, cols, False)
                self.register_buffer(f"{kind}_weight", torch.stack([w.detach() for w in weights]).contiguous())
                continue
            self.kinds[kind] = (rows, cols, True)
            packed, absmax, offset, absmax2 = [], [], [], []
            for w in weights:
                # what Params4bit does to a Linear4bit's weight: contiguous, then quantize_4bit
                p, s = bnbf.quantize_4bit(w.detach().contiguous(), blocksize=BLOCKSIZE, compress_statistics=True,
                                          quant_type="nf4")
                packed.append(p.view(-1))
                absmax.append(s.absmax)
                offset.append(s.offset.reshape(()))
                absmax2.append(s.state2.absmax)
            self.register_buffer(f"{kind}_packed", torch.stack(packed))
            self.register_buffer(f"{kind}_absmax", torch.stack(absmax))
            self.register_buffer(f"{kind}_offset", torch.stack(offset))
            self.register_buffer(f"{kind}_absmax2", torch.stack(absmax2))
            self.weight_dtype = s.dtype
            self.register_buffer("code", s.code, persistent=False)  # the NF4 code book (16 values)
            self.register_buffer("code2", s.state2.code, persistent=False)  # the nested 8-bit code book
            self.blocksize2 = s.state2.blocksize

    def weight(self, kind: str, e: int) -> torch.Tensor:
        """Expert ``e``'s ``kind`` weight (out, in) in the compute dtype, dequantized as Linear4bit dequantizes it."""
        rows, cols, quantized = self.kinds[kind]
        if not quantized:
            return getattr(self, f"{kind}_weight")[e].to(self.compute_dtype)
        import bitsandbytes.functional as bnbf

        state2 = bnbf.QuantState(absmax=getattr(self, f"{kind}_absmax2")[e], code=self.code2,
                                 blocksize=self.blocksize2, dtype=torch.float32)
        state = bnbf.QuantState(absmax=getattr(self, f"{kind}_absmax")[e], shape=torch.Size((rows, cols)),
                                code=self.code, blocksize=BLOCKSIZE, quant_type="nf4", dtype=self.weight_dtype,
                                offset=getattr(self, f"{kind}_offset")[e], state2=state2)
        packed = getattr(self, f"{kind}_packed")[e].view(-1, 1)
        return bnbf.dequantize_4bit(packed, state).to(self.compute_dtype)

    def bias(self, kind: str, e: int) -> torch.Tensor | None:
        b = getattr(self, f"{kind}_bias", None)
        return None if b is None else b[e].to(self.compute_dtype)

    def linear(self, kind: str, e: int, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight(kind, e), self.bias(kind, e))


def nf4_experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                        top_k_weights: torch.Tensor) -> torch.Tensor:
    """The experts interface's eager loop over the routed experts, each matrix applied as its Linear4bit would."""
    q = self.moee_nf4
    return _experts_loop(self, hidden_states, top_k_index, top_k_weights, q.linear, q.compute_dtype)


def _experts_loop(self, hidden_states, top_k_index, top_k_weights, linear, compute_dtype):
    final = torch.zeros_like(hidden_states)
    n = self.num_experts
    with torch.no_grad():
        mask = torch.nn.functional.one_hot(top_k_index, num_classes=n + 1).permute(2, 1, 0)
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
    for e in hit.flatten().tolist():
        if e == n:  # expert-parallel sentinel
            continue
        top_k_pos, token_idx = torch.where(mask[e])
        x = hidden_states[token_idx].to(compute_dtype)
        if self.has_gate:
            gate, up = linear("gate", e, x), linear("up", e, x)
            both = torch.cat([gate, up], -1) if self.is_concatenated else torch.stack([gate, up], -1).flatten(-2)
            h = self._apply_gate(both)
        else:
            h = self.act_fn(linear("up", e, x))
        y = linear("down", e, h)
        if self.has_post_expert_norm:
            y = self.post_expert_norm(y)
        y = y * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, y.to(final.dtype))
    return final


def _register() -> None:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, nf4_experts_forward)


def _matches_own_forward(module: torch.nn.Module, compute_dtype: torch.dtype) -> str | None:
    """Our loop on the module's full-precision weights against the class's own eager forward, on random tokens
    routed to every expert: None if equal, else what differs. Catches a family whose experts compute something the
    interface's flags do not describe."""
    n = module.num_experts
    k = min(2, n)
    gen = torch.Generator().manual_seed(0)
    param = next(p for p in module.parameters(recurse=False) if p.dim() >= 3)
    hidden = _linear_layout(module, 0)["up"][0].shape[1]
    tokens = 2 * n
    x = torch.randn(tokens, hidden, generator=gen).to(param.device, compute_dtype)
    index = torch.stack([torch.arange(tokens) % n, (torch.arange(tokens) + 1) % n], -1)[:, :k].to(param.device)
    weights = torch.rand(tokens, k, generator=gen).to(param.device, compute_dtype)
    layouts = {}

    def linear(kind, e, h):
        if e not in layouts:
            layouts[e] = _linear_layout(module, e)
        w, b = layouts[e][kind]
        return torch.nn.functional.linear(h, w.to(compute_dtype), None if b is None else b.to(compute_dtype))

    config = module.config
    before = config._experts_implementation
    try:
        with torch.no_grad():
            config._experts_implementation = "eager"
            own = module(x, index, weights)
            ours = _experts_loop(module, x, index, weights, linear, compute_dtype)
    except Exception as err:  # a forward with another signature or layout
        return f"its forward does not take the interface's arguments ({err.__class__.__name__})"
    finally:
        config._experts_implementation = before
    own = own[0] if isinstance(own, tuple) else own
    tol = 1e-4 if compute_dtype == torch.float32 else 2e-2
    if own.shape != ours.shape or not torch.allclose(own.float(), ours.float(), atol=tol, rtol=tol):
        return "its forward computes something the experts interface's layout flags do not describe"
    return None


def quantize_fused_experts(model: torch.nn.Module, compute_dtype: torch.dtype, model_type: str = "") -> int:
    """Quantize every fused experts module of a loaded model to NF4 in place (the full-precision tensors are freed
    module by module) and route its forward through ``moee_nf4``; return how many modules were quantized."""
    model_type = model_type or getattr(model.config, "model_type", type(model).__name__)
    modules = fused_experts(model)
    check_quantizable(model, "4bit", model_type)
    if not modules:
        return 0
    _register()
    checked = set()
    for name, module in modules:
        if type(module) not in checked:  # a family that is not the interface's eager loop is refused
            why = _matches_own_forward(module, compute_dtype)
            if why:
                raise refusal(model_type, name, module, why)
            checked.add(type(module))
        with torch.no_grad():
            module.moee_nf4 = NF4Experts(module, compute_dtype)
        for pname, p in list(module.named_parameters(recurse=False)):
            if p.dim() >= 3 or pname in {f"{f}_bias" for f in FUSED}:  # now held (packed, or as biases) by moee_nf4
                setattr(module, pname, torch.nn.Parameter(p.new_empty(0), requires_grad=False))
        module.config._experts_implementation = IMPLEMENTATION
    return len(modules)


def expert_bytes(model: torch.nn.Module) -> int:
    """Bytes the experts' weights take: fused 3-D parameters, or their NF4 storage (packed + quant state)."""
    total = 0
    for _, module in fused_experts(model) or []:
        total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False) if p.dim() >= 3)
    for m in model.modules():
        if isinstance(m, NF4Experts):
            total += sum(b.numel() * b.element_size() for n, b in m.named_buffers() if not n.endswith("_bias"))
    return total
