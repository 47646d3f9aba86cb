"""The docs keep up with the code."""

from __future__ import annotations

from pathlib import Path

from dreamrl.config_reference import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    """docs/config.md is generated: regenerate with `dreamrl config --markdown > docs/config.md`."""
    assert (ROOT / "docs" / "config.md").read_text() == config_reference()


def test_readme_quick_start_is_make_demo_and_make_test():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick
