"""Running long work: the worker, its handlers and the scheduler, above the services.

The durable queue they run from is :mod:`audiences.queue`, below the services (which enqueue
and cancel inside their own transactions). Execution is at least once: see that module for
the contract.
"""
