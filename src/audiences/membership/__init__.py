"""Membership: Roaring bitmaps of pids, their storage form, diffs, paging and an in-memory cache."""
