"""docs/configuration.md is the schema's reference as generated now: it cannot drift."""

from pathlib import Path

from nexplain.config import schema
from nexplain.config_reference import comments, reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_reference_is_the_generated_one():
    generated = reference(schema(), (ROOT / "config.yaml").read_text())
    assert (ROOT / "docs" / "configuration.md").read_text() == generated, \
        "regenerate: python -m nexplain.config_reference > docs/configuration.md"


def test_every_schema_key_is_listed_with_its_default_and_comment():
    text = reference(schema(), (ROOT / "config.yaml").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| `linear.concept_filter.min_mean`"))
    assert "number (>= 0, <= 1)" in row and "`0.5`" in row and "yes" in row
    assert "| `explain.clustered.k` | integer (>= 1) | yes | `5` |" in text
    assert "| `datasets.<name>.root` | string | yes |  | when not kind: world |" in text


def test_comments_follow_the_nesting():
    text = "a:\n  b: 1   # the b\n  c:\n    d: x  # deep\ne: 2 # top\n"
    assert comments(text) == {"a.b": "the b", "a.c.d": "deep", "e": "top"}
