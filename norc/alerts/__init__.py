"""Alerts: rules saying which events go to which channel, and the outbox that sends them.

- :mod:`norc.alerts.rules`: :class:`AlertRule`, their storage and the handle's short
  cache of them (the executor asks it on every write; it answers from memory).
- :mod:`norc.alerts.events`: the events, recorded as outbox rows (``norc_notifications``)
  in the transaction of the change that caused them, once per (rule, event, subject).
- :mod:`norc.alerts.delivery`: whichever daemon is alive claims due rows with a
  conditional update, composes the message and sends it through the rule's channel,
  with retries, backoff and a rate limit per rule.
- :mod:`norc.alerts.channels`: the :class:`Channel` contract plugins implement (the
  built-in ``email`` and ``webhook`` live in :mod:`norc.plugins.channels`).

docs/alerts.md describes it all for users.
"""
