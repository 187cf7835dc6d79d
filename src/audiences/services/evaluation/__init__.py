"""Evaluation in its three modes, all through the rule language's back ends:

- ``batch``: the rule compiled to the engine's SQL and run where the data is;
- ``streaming``: every streaming audience's rule run on the profiles a write changed, and
  (``sweeps``) on those whose events the clock moved across a window boundary;
- ``synchronous``: which audiences one profile would be in, and why, storing nothing;

and ``compiled``, the cache of bound and compiled rules they share. The functions other layers
call are named here.
"""

from audiences.services.evaluation.batch import (
    refresh,
    refresh_all,
    refresh_many,
    select_members,
)
from audiences.services.evaluation.compiled import bound_rule, compiled_rules
from audiences.services.evaluation.streaming import (
    following_events,
    lock_streaming,
    on_profiles_written,
    streaming_audiences,
)
from audiences.services.evaluation.sweeps import (
    SWEEP_HANDLER,
    Swept,
    last_until,
    prune,
    sweep,
    workspaces_to_sweep,
)
from audiences.services.evaluation.synchronous import Verdict, evaluate_profile, explain_member

__all__ = [
    "SWEEP_HANDLER",
    "Swept",
    "Verdict",
    "bound_rule",
    "compiled_rules",
    "evaluate_profile",
    "explain_member",
    "following_events",
    "last_until",
    "lock_streaming",
    "on_profiles_written",
    "prune",
    "refresh",
    "refresh_all",
    "refresh_many",
    "select_members",
    "streaming_audiences",
    "sweep",
    "workspaces_to_sweep",
]
