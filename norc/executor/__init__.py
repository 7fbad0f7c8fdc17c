"""Executors: claim instances from a queue and run each in isolation.

The public class is :class:`norc.executor.executor.Executor` (also returned by
``Norc.executor()``). This package imports nothing eagerly, so that
``python -m norc.executor.worker`` starts a worker without loading the executor.
"""
