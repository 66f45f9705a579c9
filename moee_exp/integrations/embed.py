"""Embed one's own texts: `python -m moee_exp.integrations.embed --model M --input texts.txt --output f.npz`.

M is a hub id, a local dir or a conf/model name (tiny, olmoe). Writes float32 arrays in input order: hs (n, hidden),
rw (n, n_moe_layers * n_experts), emb (the fused embedding).
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import USER_ERRORS, ConfigError, error_line
from ..faults import DENIED, SPACE, as_os_error, is_write_fault
from ..files import atomic_write, unwritable_dir
from ..checks import choices_of
from ..features.loading import ModelConfig, check_device, check_max_length, load_model
from ..features.prompts import TEMPLATES
from ..scoring.fuse import EmbConfig, fuse
from ..scoring.spec import MoEESpec
from .api import DEFAULT_CACHE, embed_texts, resolve_model  # resolve_model: conf/model names

DEFAULT_MAX_LENGTH = ModelConfig.max_length


def _spec_field(schema, name: str) -> dict:
    """argparse's default and choices of an option that is a spec field: the schema's own."""
    f = schema.__dataclass_fields__[name]
    allowed = choices_of(f)
    return {"default": f.default, **({"choices": list(allowed)} if allowed is not None else {})}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one `error:` line like every other user mistake (argparse's own exit code 2)
        self.exit(2, f"error: {message} (python -m moee_exp.integrations.embed --help lists the options)\n")


def _number(kind, low, high=None):
    def parse(text):
        value = kind(text)  # ValueError -> argparse's "invalid <name> value: '...'"
        if (kind is float and not math.isfinite(value)) or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__} in [{low}, {high or 'inf'}]")
        return value

    parse.__name__ = kind.__name__
    return parse


def _encoding(name):
    try:
        info = codecs.lookup(name)
        if not getattr(info, "_is_text_encoding", True):  # rot13, base64, ...: codecs, but not text encodings
            raise LookupError(name)
        return info.name
    except LookupError:
        raise argparse.ArgumentTypeError(f"unknown encoding {name!r}; e.g. utf-8, latin-1, cp1252, utf-16") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="python -m moee_exp.integrations.embed", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="hub id, local dir, or a conf/model option such as tiny or olmoe")
    p.add_argument("--input", required=True, type=Path,
                   help="text file, one text per line (lines end in \\n or \\r\\n; other Unicode line breaks stay "
                        "inside a text); - (or /dev/stdin) reads standard input")
    p.add_argument("--encoding", default="utf-8", type=_encoding,
                   help="encoding of --input (default utf-8; a BOM is dropped), e.g. latin-1, cp1252, utf-16")
    p.add_argument("--output", required=True, type=Path, help=".npz file to write (this exact path)")
    # the spec's fields (moee_exp.scoring.spec): defaults and choices are the schemas'
    p.add_argument("--prompt", default="prompteol", choices=list(TEMPLATES))
    p.add_argument("--template", help="your own prompt template containing {text} (overrides --prompt)")
    p.add_argument("--emb", **_spec_field(EmbConfig, "kind"), help="which fused embedding to store as `emb`")
    p.add_argument("--alpha", type=_number(float, 0, 1e12), default=1.0, help="moee_sum weight of cos(RW)")
    p.add_argument("--rw-activation", **_spec_field(EmbConfig, "rw_activation"))
    p.add_argument("--standardize", choices=_spec_field(EmbConfig, "standardize")["choices"],
                   help="default: the emb kind's (text for moee_concat, else none)")
    p.add_argument("--revision")
    p.add_argument("--dtype", **_spec_field(ModelConfig, "dtype"), help="auto: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--quantization", **_spec_field(ModelConfig, "quantization"))
    p.add_argument("--device", **_spec_field(ModelConfig, "device"))
    p.add_argument("--batch-size", type=_number(int, 1, 2**31 - 1), default=ModelConfig.batch_size)
    p.add_argument("--max-length", type=_number(int, 8, 2**31 - 1), default=None,
                   help=f"tokens per prompted text, at most the model's max_position_embeddings; longer texts are cut "
                        f"(default: {DEFAULT_MAX_LENGTH}, or the model's limit if that is shorter)")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--cache-dir", default=os.environ.get("MOEE_CACHE_DIR") or DEFAULT_CACHE,
                   help=f"where tiny models are built (default: $MOEE_CACHE_DIR, as for run.py, else {DEFAULT_CACHE})")
    return p.parse_args(argv)


def read_texts(path: Path, encoding: str) -> list[str]:
    """One text per line of ``path``; lines end in \\n or \\r\\n (a text may hold other Unicode line breaks)."""
    if str(path) == "-":  # standard input
        data = sys.stdin.buffer.read()
    elif path.is_dir() or not path.exists():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"--input {str(path)!r} {what}: give a text file with one text per line (- reads stdin)")
    else:  # a file, or a pipe / terminal such as /dev/stdin
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ConfigError(f"--input {str(path)!r} cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"--input {str(path)!r} is not valid {encoding} (byte {data[err.start]:#04x} at offset {err.start}): "
            f"give its encoding with --encoding (e.g. --encoding latin-1 or cp1252) or re-encode it to UTF-8"
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line starts no text
        lines.pop()
    texts = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not texts:
        raise ConfigError(f"--input {str(path)!r} is empty: give a text file with one text per line")
    return texts


def check_output(path: Path) -> None:
    """Fail before the model loads if the .npz cannot be written (its dir is created if missing)."""
    if path.is_dir():
        raise ConfigError(f"--output {str(path)!r} is a directory: give a file name such as feats.npz")
    problem = unwritable_dir(path.parent)
    if problem:
        raise ConfigError(f"--output {str(path)!r} cannot be written ({str(problem[0])!r} is not a writable dir)")


def write_npz(path: Path, **arrays) -> None:
    """Atomically (``files.atomic_write``: a killed run leaves no half-written file), at exactly ``path``. A write
    that fails for lack of space or permission is a ConfigError naming ``path``."""
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except BaseException as err:
        if is_write_fault(err):
            os_err = as_os_error(err)
            what = SPACE.get(os_err.errno) or DENIED.get(os_err.errno) or os_err.strerror
            raise ConfigError(f"cannot write --output {str(path)!r}: {what}; free space, or give --output on "
                              "another filesystem") from None
        raise


# the model settings a loader error names, as this command's options
_OPTIONS = {"prompt.template": "--template", "model.name_or_path": "--model", "model.revision": "--revision", "model.dtype": "--dtype",
            "model.quantization": "--quantization", "model.device": "--device", "model.max_length": "--max-length",
            "model.trust_remote_code": "--trust-remote-code", "model.cache_dir": "--cache-dir"}
_SETTING = re.compile(r"\b(" + "|".join(re.escape(k) for k in _OPTIONS) + r")\b")


def _as_options(err: BaseException) -> BaseException:
    """``err`` with run.py's setting names (model.name_or_path=...) written as this command's options (--model)."""
    text = _SETTING.sub(lambda m: _OPTIONS[m.group(1)], str(err))
    return err if text == str(err) else ConfigError(text.replace("--model=", "--model ").replace(
        "--revision=", "--revision "))


def check_standardize(n_texts: int, standardize: str, batch_size: int = 128) -> None:
    """--standardize batch z-scores each feature over each batch of ``batch_size`` texts: a batch of one text has no
    spread and its embedding would be all zeros, so such an input is refused before the model loads."""
    if standardize == "batch" and n_texts % batch_size == 1:
        which = "the only text" if n_texts == 1 else f"text {n_texts} (alone in the last batch of {batch_size})"
        raise ConfigError(f"--standardize batch z-scores each feature over a batch of texts: {which} would embed as "
                          "all zeros; give more texts, or --standardize text / none")


def spec_of(args, path: str, trust: bool) -> MoEESpec:
    """The spec the options describe (checked as any spec is: one line naming the option)."""
    keys = {"revision": args.revision, "dtype": args.dtype, "quantization": args.quantization, "device": args.device,
            "trust_remote_code": args.trust_remote_code or trust, "batch_size": args.batch_size,
            "max_length": args.max_length or DEFAULT_MAX_LENGTH, "template": args.template, "kind": args.emb,
            "rw_activation": args.rw_activation}
    if args.standardize:
        keys["standardize"] = args.standardize
    try:
        return MoEESpec.create(path, prompt=args.prompt, alpha=args.alpha, name=args.model, **keys)
    except ConfigError as err:
        raise _as_options(err) from None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        texts = read_texts(args.input, args.encoding)
        check_device(args.device, "--device")
        check_output(args.output)
        path, trust = resolve_model(args.model, args.cache_dir)  # (a tiny model is built here, on first use)
        spec = spec_of(args, path, trust)
        check_standardize(len(texts), spec.emb.standardize)
        m = spec.model
        try:
            lm = load_model(path, revision=m.revision, dtype=m.dtype, quantization=m.quantization, device=m.device,
                            trust_remote_code=m.trust_remote_code)
        except USER_ERRORS as err:  # the loader names run.py's settings; this command has options
            raise _as_options(err) from None
        if args.max_length is None:  # a default adapts to the model; a value the user gave is checked
            limit = getattr(lm.model.config, "max_position_embeddings", None)
            if isinstance(limit, int) and limit < m.max_length:
                spec = dataclasses.replace(spec, model=dataclasses.replace(m, max_length=limit))
        check_max_length(lm.model.config, spec.model.max_length, "--max-length")
        feats = embed_texts(
            lm, texts, spec.prompt.name, template=spec.prompt.template, normalize=spec.prompt.normalize,
            max_length=spec.model.max_length, batch_size=spec.model.batch_size, padding_side=spec.model.padding_side,
            features=(spec.emb.hs_feature, spec.emb.rw_feature), progress=True,
        )
        emb = fuse(feats, spec.emb.kind, **spec.emb.fuse_kwargs(float(spec.alpha)))
        write_npz(args.output, hs=feats["hs"], rw=feats["rw"].reshape(len(texts), -1), emb=emb)
    except (*USER_ERRORS, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(texts)} texts, hs {feats['hs'].shape[1]}, rw {feats['rw'].shape[1]}x"
          f"{feats['rw'].shape[2]}, emb ({spec.emb.kind}) {emb.shape[1]} dims")
    return 0


if __name__ == "__main__":
    sys.exit(main())
