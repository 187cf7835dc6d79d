"""Long work as durable jobs: the queue (importable by services), the worker and its handlers.

``jobs.queue`` sits beside ``store`` in the layers and is what services use to enqueue and
cancel; ``jobs.worker``, ``jobs.context`` and ``jobs.handlers`` sit above the services and run
the work. Execution is at least once: see :mod:`audiences.jobs.queue` for the contract.
"""
