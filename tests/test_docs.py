"""The docs keep up with the code: generated references are current, links resolve, and
the README's commands, presets and resume rules are those of the code."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dreamrl import config as cfglib
from dreamrl.config import Config, build_config, parse_overrides
from dreamrl.config_reference import config_reference
from dreamrl.presets import PRESETS
from dreamrl.run.resume import RESUMABLE

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
RESUME_ANCHOR = "docs/config.md#settings-that-may-change-on-resume"
README_MAX_LINES = 180  # a newcomer reads it in five minutes; references go in docs/

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE = re.compile(r"`[^`]+`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"^(?:\.venv/bin/)?dreamrl\s")


def placeholder(token: str) -> bool:
    """A token of a usage line rather than of a command: ``ID``, ``NAME``, ``...``, ``[N]``."""
    return token.isupper() or any(c in token for c in "[]<>") or "..." in token


def prose(text: str) -> str:
    """``text`` without code blocks and inline code (where brackets are not links)."""
    return INLINE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+\s+(.*)$", FENCE.sub("", page.read_text()), re.M)
    return {slug(h) for h in headings}


def command_lines(page: Path) -> list[str]:
    """Every ``dreamrl ...`` / ``.venv/bin/dreamrl ...`` command of ``page``: lines of its
    code blocks (continuations joined) and inline code spans."""
    text = page.read_text()
    lines = []
    for block in FENCE.findall(text):
        body = "\n".join(block.splitlines()[1:-1]).replace("\\\n", " ")
        lines += [line.strip() for line in body.splitlines()]
    lines += [span.strip("`") for span in INLINE.findall(FENCE.sub("", text))]
    return [line for line in lines if COMMAND.match(line)]


def resume_sentences(page: Path) -> list[str]:
    """Sentences of ``page``'s paragraphs on resuming (code blocks dropped) that say what
    may change."""
    out = []
    for paragraph in re.split(r"\n\s*\n", FENCE.sub("", page.read_text())):
        if not re.search(r"resum", paragraph, re.I):
            continue
        flat = re.sub(r"\s+", " ", paragraph)
        out += [s for s in re.split(r"(?<=[.;])\s+", flat) if re.search(r"(may|can) change", s)]
    return out


def test_config_reference_is_current():
    """docs/config.md is generated: regenerate with `dreamrl config --markdown > docs/config.md`."""
    assert (ROOT / "docs" / "config.md").read_text() == config_reference()


def test_readme_quick_start_is_make_demo_and_make_test():
    readme = README.read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick


def test_readme_stays_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings_that_exist(page):
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:: not ours to check offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such heading in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_benchmark_scripts_named_exist(page):
    scripts = set(re.findall(r"benchmarks/[\w/]+\.py", page.read_text()))
    missing = sorted(s for s in scripts if not (ROOT / s).is_file())
    assert not missing, f"{page.name} names {missing}"


def test_every_dreamrl_command_names_a_subcommand_that_exists():
    subcommands = {shlex.split(line, comments=True)[1] for page in PAGES for line in command_lines(page)}
    assert "train" in subcommands and "eval" in subcommands  # the README's own
    for sub in sorted(subcommands):
        done = subprocess.run(
            [sys.executable, "-m", "dreamrl", sub, "--help"], capture_output=True, text=True, cwd=ROOT
        )
        assert done.returncode == 0, f"`dreamrl {sub}` is not a command: {done.stderr.strip()}"


def _presets_and_overrides(tokens: list[str]) -> tuple[list[str], list[str]]:
    presets, overrides, in_presets = [], [], False
    for token in tokens:
        if token.startswith("-"):
            in_presets = token == "--preset"
        elif "=" in token:
            overrides.append(token)
            in_presets = False
        elif in_presets:
            presets.append(token)
    return presets, overrides


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_presets_and_settings_in_commands_exist(page):
    """Every ``--preset`` name and ``key=value`` of a dreamrl command builds a config."""
    for line in command_lines(page):
        tokens = shlex.split(line, comments=True)[2:]
        if any(placeholder(t) for t in tokens):
            continue  # a usage line (`dreamrl eval --logdir DIR`), not a command as written
        presets, overrides = _presets_and_overrides(tokens)
        unknown = [p for p in presets if p not in PRESETS]
        assert not unknown, f"{page.name}: `{line}` names presets that do not exist: {unknown}"
        build_config(presets, parse_overrides(overrides))  # ConfigError names a bad key or value


def test_presets_the_readme_names_exist():
    """The README names some presets (docs/config.md lists them all): each one exists."""
    text = README.read_text()
    bullet = re.search(r"^- Presets.*?(?=^- |^\S|\Z)", text, re.S | re.M)
    assert bullet, "README.md: the bullet on presets is gone"
    named = re.findall(r"`(\w+)`", bullet.group(0))
    named += [name for span in re.findall(r"`--preset ([^`]+)`", text) for name in span.split()]
    unknown = sorted({n for n in named if n not in PRESETS and not placeholder(n)})
    assert named and not unknown, f"README.md names presets that do not exist: {unknown}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "config.md"], ids=lambda p: p.name)
def test_what_the_docs_say_may_change_on_resume_is_true(page):
    """A sentence on what may change on resume names only resumable keys, and one that
    says "only" points at the generated list instead of listing keys by hand."""
    keys = set(cfglib.flatten(Config()))
    for sentence in resume_sentences(page):
        named = {k for k in re.findall(r"`([\w.]+)`", sentence) if k in keys}
        assert named <= set(RESUMABLE), (
            f"{page.name}: {sorted(named - set(RESUMABLE))} may not change: {sentence}"
        )
        if re.search(r"\bonly\b", sentence, re.I):
            assert "settings-that-may-change-on-resume" in sentence, f"{page.name}: {sentence}"


def test_readme_points_at_the_generated_list_of_resumable_settings():
    assert RESUME_ANCHOR in README.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_settings_named_in_the_docs_exist(page):
    """A setting named in prose (``run.env_timeout``, ``compute.codec_chunk=128``) is a
    field of the config, so a renamed key cannot linger in the docs."""
    keys = set(cfglib.flatten(Config()))
    named = set()
    for span in re.findall(r"`([a-z_]+(?:\.[a-z0-9_]+)+)(?:=[^`\s]*)?`", FENCE.sub("", page.read_text())):
        top = span.split(".", 1)[0]
        if re.search(r"\.(py|md|json|jsonl|html|png|safetensors|npz)$", span):
            continue  # a file name
        if top in ("run", "compute", "replay", "env") or (top == "agent" and span.count(".") >= 2):
            named.add(span)
    unknown = sorted(named - keys)
    assert not unknown, f"{page.name} names settings that do not exist: {unknown}"


def test_readme_python_example_runs():
    """The README's Python example, on the format-1 fixture checkpoint (CartPole-v1)."""
    found = re.search(r"## From Python\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert found, "README.md: the Python example is gone"
    code = found.group(1)
    assert 'Agent.load("runs/cartpole")' in code
    code = code.replace('"runs/cartpole"', repr(str(ROOT / "tests" / "fixtures" / "checkpoint_v1")))
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["terminated"] or scope["truncated"]
