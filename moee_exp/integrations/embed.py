"""Embed one's own texts: `python -m moee_exp.embed --model <hub id | dir | conf name> --input texts.txt --output f.npz`.

Writes float32 arrays in input order: hs (n, hidden), rw (n, n_moe_layers * n_experts), emb (the fused embedding).
"""

from __future__ import annotations

import argparse
import codecs
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import USER_ERRORS, ConfigError, error_line
from ..faults import DENIED, SPACE, as_os_error, is_write_fault
from ..features.loading import (
    DTYPES,
    QUANTIZATIONS,
    check_device,
    check_max_length,
    load_model,
)
from ..features.prompts import TEMPLATES, check_template
from ..scoring.fuse import KINDS, RW_ACTIVATIONS, STANDARDIZE, fuse
from .api import DEFAULT_CACHE, embed_texts, resolve_model  # resolve_model: conf/model names

DEFAULT_MAX_LENGTH = 512


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one `error:` line like every other user mistake (argparse's own exit code 2)
        self.exit(2, f"error: {message} (python -m moee_exp.embed --help lists the options)\n")


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
    p = _Parser(prog="python -m moee_exp.embed", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="hub id, local dir, or a conf/model option such as tiny or olmoe")
    p.add_argument("--input", required=True, type=Path,
                   help="text file, one text per line (lines end in \\n or \\r\\n; other Unicode line breaks stay "
                        "inside a text); - (or /dev/stdin) reads standard input")
    p.add_argument("--encoding", default="utf-8", type=_encoding,
                   help="encoding of --input (default utf-8; a BOM is dropped), e.g. latin-1, cp1252, utf-16")
    p.add_argument("--output", required=True, type=Path, help=".npz file to write (this exact path)")
    p.add_argument("--prompt", default="prompteol", choices=list(TEMPLATES))
    p.add_argument("--template", help="your own prompt template containing {text} (overrides --prompt)")
    p.add_argument("--emb", default="moee_sum", choices=KINDS, help="which fused embedding to store as `emb`")
    p.add_argument("--alpha", type=_number(float, 0, 1e12), default=1.0, help="moee_sum weight of cos(RW)")
    p.add_argument("--rw-activation", default="logits", choices=RW_ACTIVATIONS)
    p.add_argument("--standardize", default=None, choices=STANDARDIZE, help="default: text for moee_concat, else none")
    p.add_argument("--revision")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="auto: float32 on CPU, bfloat16 on GPU")
    p.add_argument("--quantization", default="none", choices=QUANTIZATIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=_number(int, 1, 2**31 - 1), default=32)
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
    probe = path.parent.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {str(path)!r} cannot be written ({str(probe)!r} is not a writable dir)")


def write_npz(path: Path, **arrays) -> None:
    """Atomically (temp file + rename, so a killed run leaves no half-written file), at exactly ``path``. A write
    that fails for lack of space or permission is a ConfigError naming ``path``."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_write_fault(err):
            os_err = as_os_error(err)
            what = SPACE.get(os_err.errno) or DENIED.get(os_err.errno) or os_err.strerror
            raise ConfigError(f"cannot write --output {str(path)!r}: {what}; free space, or give --output on "
                              "another filesystem") from None
        raise


# the model settings a loader error names, as this command's options
_OPTIONS = {"model.name_or_path": "--model", "model.revision": "--revision", "model.dtype": "--dtype",
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


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        texts = read_texts(args.input, args.encoding)
        check_standardize(len(texts), args.standardize)
        check_output(args.output)
        check_device(args.device, "--device")
        if args.template is not None:
            try:
                check_template(args.template)
            except ValueError as err:
                raise ConfigError(f"--template: {err}") from None
        try:
            path, trust = resolve_model(args.model, args.cache_dir)
            lm = load_model(
                path,
                revision=args.revision,
                dtype=args.dtype,
                quantization=args.quantization,
                device=args.device,
                trust_remote_code=args.trust_remote_code or trust,
            )
        except USER_ERRORS as err:  # the loader names run.py's settings; this command has options
            raise _as_options(err) from None
        if args.max_length is None:  # a default adapts to the model; a value the user gave is checked
            limit = getattr(lm.model.config, "max_position_embeddings", None)
            args.max_length = min(DEFAULT_MAX_LENGTH, limit) if isinstance(limit, int) else DEFAULT_MAX_LENGTH
        check_max_length(lm.model.config, args.max_length, "--max-length")
        feats = embed_texts(
            lm, texts, args.prompt, template=args.template, max_length=args.max_length, batch_size=args.batch_size,
            progress=True,
        )
        standardize = args.standardize or ("text" if args.emb == "moee_concat" else "none")
        emb = fuse(feats, args.emb, alpha=args.alpha, rw_activation=args.rw_activation, standardize=standardize)
        write_npz(args.output, hs=feats["hs"], rw=feats["rw"].reshape(len(texts), -1), emb=emb)
    except (*USER_ERRORS, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {len(texts)} texts, hs {feats['hs'].shape[1]}, rw {feats['rw'].shape[1]}x"
          f"{feats['rw'].shape[2]}, emb ({args.emb}) {emb.shape[1]} dims")
    return 0


if __name__ == "__main__":
    sys.exit(main())
