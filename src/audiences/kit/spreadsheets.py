"""Text bound for a CSV file a person may open in a spreadsheet, which runs some cells as code."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection")."""


def defused(text: str) -> str:
    """``text`` as a spreadsheet shows it without running it: a leading ``'`` before what
    would start a formula, as OWASP advises (https://owasp.org/www-community/attacks/CSV_Injection).

    >>> defused("=1+1")
    "'=1+1"
    >>> defused("user-1")
    'user-1'
    """
    return "'" + text if text.startswith(FORMULA_STARTS) else text
