"""The service layer: plain Python, no HTTP. One module per resource.

Functions take the session first and everything else keyword-only; they flush but never commit
(the caller owns the transaction) and raise only :mod:`audiences.errors`.
"""
