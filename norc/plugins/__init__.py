"""Norc's built-in plugins, registered through the core's own ``norc`` entry points.

Nothing in the core imports these modules by name: they are found like any external
plugin, and ``NORC_DISABLE_PLUGINS=dbqueue`` blocks one like any other.
"""
