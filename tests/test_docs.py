"""The README and docs/ hold together: every relative link reaches a file (and a heading, where it names one), the
README stays a five-minute read, its code map names files that exist, and every benchmark page (docs/benchmarks/)
states the command that measures it again, with a script, options and page that exist."""

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

BENCH = ROOT / "docs" / "benchmarks"
BENCH_PAGES = sorted(BENCH.glob("*.md"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *BENCH_PAGES]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for title in re.findall(r"^#{1,6} (.+)$", path.read_text(encoding="utf-8"), re.M):
        out.add(re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_reaches_its_file_and_heading(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"https?:|mailto:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert not broken, broken


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, page.name


def test_code_map_names_files_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Code map", 1)[1].split("```")[1]
    folder = ROOT
    for line in block.splitlines():
        names = re.findall(r"(?<![\w/.])([\w]+(?:/[\w]+)*/?(?:\.py)?)(?=[ ,(]|$)", line.split("  ")[0] + " ")
        for name in names:
            if name.endswith("/"):
                folder = ROOT / name if not line.startswith(" ") else folder / name
                assert folder.is_dir(), name
            elif name.endswith(".py"):
                assert (folder / name).exists() or (ROOT / name).exists(), name


# ------------------------------------------------------------------------------------------------- benchmark pages
# Their commands are written in ```sh blocks, not ```bash: tests/test_readme.py runs every ```bash command of every
# docs/ page (docs/benchmarks/ included) as part of the suite, and a benchmark takes minutes or a GPU. So they are
# not run here; they are checked instead: each names a script or module that exists, options that script defines,
# and (--update) the page that holds the block the run writes.


def sh_commands(page: Path) -> list[list[str]]:
    """argv of every command in the page's ```sh blocks (comments dropped; `a && b` gives two)."""
    out = []
    for block in re.findall(r"^```sh\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            while argv:
                cut = argv.index("&&") if "&&" in argv else len(argv)
                out.append(argv[:cut])
                argv = argv[cut + 1:]
    return [a for a in out if a]


def bench_sections() -> tuple[set[str], set[str]]:
    """bench.py's sections with a block of their own (OWN) and the machine table's (TABLE), read from its source."""
    src = (ROOT / "benchmarks/bench.py").read_text(encoding="utf-8")
    own = set(re.findall(r'^    "(\w+)": Own\(', src, re.M))
    table = set(re.findall(r'"(\w+)":', re.search(r"^TABLE = \{(.*?)\}", src, re.M | re.S).group(1)))
    assert own and table
    return own, table


def options(argv: list[str]) -> dict[str, str]:
    out, i = {}, 0
    while i < len(argv):
        if argv[i].startswith("--"):
            key, eq, value = argv[i].partition("=")
            if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            out[key] = value
        i += 1
    return out


def blocks_written(script: str, opts: dict[str, str]) -> set[str]:
    """The bench:<label> blocks a run writes (bench.py: a section's own block, or the machine table's label)."""
    if script == "gpu_extraction.py":
        return {"gpu-experts"}
    if script != "bench.py":
        return set()
    if "--alpha-selection" in opts:
        return {"alpha-selection"}
    own, _ = bench_sections()
    sections = set(opts.get("--sections", "sweep,overhead,padding,memory").split(","))
    labels = sections & own
    if sections - own:
        label = f"{opts.get('--model', 'tiny')}-{opts.get('--device', 'cpu').split(':')[0]}"
        quantization = opts.get("--quantization", "none")
        labels.add(label + (f"-{quantization}" if quantization != "none" else ""))
    return labels


def test_the_benchmark_index_lists_every_page_and_the_readme_links_it():
    assert not (ROOT / "BENCHMARKS.md").exists()
    index = (BENCH / "README.md").read_text(encoding="utf-8")
    assert "(docs/benchmarks/README.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    for page in BENCH_PAGES:
        if page.name != "README.md":
            assert f"]({page.name})" in index, page.name


@pytest.mark.parametrize("page", BENCH_PAGES, ids=[p.name for p in BENCH_PAGES])
def test_benchmark_page_states_a_command_that_exists(page):
    text = page.read_text(encoding="utf-8")
    assert "```bash" not in text, "benchmark commands go in ```sh blocks: tests/test_readme.py would run ```bash ones"
    commands = sh_commands(page)
    assert commands, f"{page.name}: no ```sh block with the command that measures it again"
    own, table = bench_sections()
    for argv in commands:
        python = next((i for i, a in enumerate(argv) if re.search(r"(^|/)python3?$", a)), None)
        if python is None:
            continue
        args = argv[python + 1:]
        if args[0] == "-m":
            top = args[1].split(".")[0]
            if (ROOT / top).is_dir():  # our own module (stdlib / installed tools: venv, uv, pytest are not checked)
                assert (ROOT / (args[1].replace(".", "/") + ".py")).exists(), args[1]
            continue
        if args[0] == "-c" or not args[0].startswith("benchmarks/"):
            continue
        script = ROOT / args[0]
        assert script.exists(), args[0]
        opts = options(args[1:])
        source = script.read_text(encoding="utf-8")
        if "--alpha-selection" in opts:  # bench.py hands the command line to alpha_selection.py's parser
            source += (ROOT / "benchmarks/alpha_selection.py").read_text(encoding="utf-8")
        for opt in set(opts) - {"--help"}:  # argparse's own
            assert f'"{opt}"' in source, f"{page.name}: {args[0]} has no option {opt}"
        if "--sections" in opts:
            assert set(opts["--sections"].split(",")) <= own | table, opts["--sections"]
        if "--update" in opts:
            target = ROOT / opts["--update"]
            assert target.parent == BENCH and target.exists(), opts["--update"]
            for label in blocks_written(script.name, opts):
                assert f"<!-- bench:{label} -->" in target.read_text(encoding="utf-8"), (opts["--update"], label)


def test_every_generated_block_is_on_one_page_and_closed():
    where: dict[str, list[str]] = {}
    for page in BENCH_PAGES:
        text = page.read_text(encoding="utf-8")
        for label in re.findall(r"<!-- bench:([\w-]+) -->", text):
            assert f"<!-- /bench:{label} -->" in text, (page.name, label)
            where.setdefault(label, []).append(page.name)
    assert {label for label, pages in where.items() if len(pages) > 1} == set(), where
    own, _ = bench_sections()
    assert own | {"alpha-selection", "gpu-experts", "tiny-cpu"} <= where.keys()
