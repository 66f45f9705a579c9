"""At load time, one short forward pass proves the routers found by shape are the ones the model routes with.

Router discovery by shape (moee_exp.features.routers) could, in a family we have never seen, pick a module that merely has
an (n_experts, hidden) weight (a second kind of router, a hash table, a projection of the same size), or read a
router whose logits are not a linear map of its input. Where the model records its own ``router_logits``
(transformers' ``output_router_logits``, which every MoE family in transformers >= 5 supports through its router
class), our RW for one text must equal them: same number of routers, same values. Otherwise the load fails with
UnsupportedRouterError, so no family silently yields wrong features. A model that records no router logits is
not checked here (its row in the README coverage table says how it was checked).
"""

from __future__ import annotations

import logging

import torch

from ..errors import UnsupportedRouterError
from .routers import router_logits

log = logging.getLogger(__name__)

PROBE = "Routers are checked against the model's own router logits."
# Relative to the logits' scale: bf16/fp16 rounding is ~1e-2 of it at worst; a wrong router is off by O(1).
RTOL = 0.05


def is_probabilities(t: torch.Tensor) -> bool:
    """Rows that are a distribution: what a family records when its "router_logits" are post-softmax."""
    return bool((t >= 0).all()) and bool(torch.allclose(t.sum(-1), torch.ones(()), atol=1e-4))


@torch.inference_mode()
def check_routers(lm) -> str:
    """Raise UnsupportedRouterError where our RW is not the model's router logits; return how it was checked."""
    name = lm.name_or_path
    stacks = {part for r in lm.routers for part in r.name.split(".") if part in ("encoder", "decoder")}
    if getattr(lm.model.config, "is_encoder_decoder", False) or len(stacks) > 1:
        raise UnsupportedRouterError(
            f"{name}: an encoder-decoder model (routers in {' and '.join(sorted(stacks)) or 'both stacks'}); MoEE "
            "embeds with a decoder-only LM's last token and routers, so it refuses this family rather than guess"
        )
    ids = lm.tokenizer(PROBE, return_tensors="pt")["input_ids"].to(lm.device)
    ours: list = [None] * len(lm.routers)

    def tap(i, router):
        def hook(module, args, kwargs):
            flat = args[0] if args else next(iter(kwargs.values()))
            ours[i] = router_logits(router, flat.reshape(-1, flat.shape[-1])[-1:])[0]

        return hook

    handles = [r.module.register_forward_pre_hook(tap(i, r), with_kwargs=True) for i, r in enumerate(lm.routers)]
    try:
        out = lm.model(input_ids=ids, use_cache=False, output_router_logits=True)
    except TypeError:  # the family's forward takes no output_router_logits
        return "not checked (the model records no router logits)"
    finally:
        for h in handles:
            h.remove()
    recorded = getattr(out, "router_logits", None)
    if not recorded or not all(isinstance(t, torch.Tensor) for t in recorded):
        return "not checked (the model records no router logits)"
    if missed := [r.name for r, o in zip(lm.routers, ours) if o is None]:
        raise UnsupportedRouterError(
            f"{name}: router-shaped {missed[0]} is not called on text (its weight is read directly, or it routes "
            "another modality), so MoEE cannot read its input; it refuses this family rather than guess"
        )
    if len(recorded) != len(lm.routers):
        raise UnsupportedRouterError(
            f"{name}: {len(lm.routers)} modules have a router-shaped weight ({', '.join(r.name for r in lm.routers[:3])}"
            f"{', ...' if len(lm.routers) > 3 else ''}) but the model reports {len(recorded)} router outputs per "
            "forward pass; MoEE cannot tell which are its routers, so it refuses this family rather than guess"
        )
    for router, mine, theirs in zip(lm.routers, ours, recorded):
        theirs = theirs.reshape(-1, theirs.shape[-1])[-1].float()
        if theirs.shape != mine.shape:
            raise UnsupportedRouterError(f"{name}: router {router.name} gives {tuple(mine.shape)} logits, the model "
                                         f"reports {tuple(theirs.shape)}; RW would be wrong, so the family is refused")
        mine = mine.to(theirs.device)
        if is_probabilities(theirs):  # some families (Gemma 4) record softmax(logits) as "router_logits"
            mine = mine.softmax(-1)
        err = float((mine - theirs).abs().max())
        scale = float(theirs.abs().max()) + 1e-6
        if err > RTOL * scale:
            raise UnsupportedRouterError(
                f"{name}: router {router.name}'s logits are not a linear map of its input (ours differ from the "
                f"model's router_logits by {err:.3g} at scale {scale:.3g}); RW would be wrong, so the family is refused"
            )
    return "router_logits"
