"""RW dims and weight memory (bf16, 4-bit) of the conf/model/*.yaml checkpoints, computed on the meta device.

    python scripts/model_sizes.py          # markdown table (docs/models.md, "Today's checkpoints")

The config is the checkpoint's own when it is in the HF cache (or the hub is reachable), else the config.json
values recorded under ``hub_config:`` in the model's yaml. Nothing is downloaded but config.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rows():
    from transformers import AutoConfig

    from moee_exp.features.loading import hub_offline
    from devtools.sizing import config_from_facts, size_of

    hub_offline()  # an unreachable hub: the HF cache only, at once, instead of retrying the hub for every model
    for path in sorted((ROOT / "conf/model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if not cfg.get("hub_config"):
            continue
        try:
            config, source = AutoConfig.from_pretrained(cfg["name_or_path"]), "config.json"
        except OSError:
            config, source = config_from_facts(cfg["hub_config"]), "hub_config"
        s = size_of(config)
        fit = lambda gb: "yes" if s.fits(gb) else "no"  # noqa: E731
        yield (f"| `{path.stem}` | {cfg['name_or_path']} | `{s.model_type}` | {s.n_routers} × {s.n_experts} = "
               f"{s.rw_dims} | {s.hidden} | {s.params / 1e9:.1f} B | {s.bf16_gb:.1f} GiB ({fit(s.bf16_gb)}) | "
               f"{s.nf4_gb:.1f} GiB ({fit(s.nf4_gb)}) | {source} |")


def main() -> int:
    print("| `model=` | checkpoint | model type | RW dims (layers × experts) | HS dims | params (base model) "
          "| bf16 weights (fits 80 GB?) | 4-bit nf4 weights (fits 80 GB?) | config from |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows():
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
