"""docs/rules.md stays honest: every error code and JSON operator the code has is documented."""

from __future__ import annotations

import re
from pathlib import Path

from audiences.rules import dialect
from audiences.rules.json_ops import OPS

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
ERRORS = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
SOURCE = "\n".join(
    p.read_text(encoding="utf-8") for p in (ROOT / "src/audiences/rules").glob("*.py")
)


def test_every_error_code_is_documented() -> None:
    codes = set(re.findall(r'"(rule_[a-z_]+)"', SOURCE))
    assert len(codes) >= 14
    assert sorted(code for code in codes if f"`{code}`" not in DOC) == []
    assert sorted(code for code in codes if f"`{code}`" not in ERRORS) == []


def test_every_json_operator_and_function_is_documented() -> None:
    assert sorted(op for op in OPS if f"`{op}`" not in DOC and f"/ `{op}`" not in DOC) == []
    names = [name for name in dialect.FUNCTIONS if name not in ("now", "current_date")]
    assert sorted(name for name in names if f"`{name}(" not in DOC) == []
