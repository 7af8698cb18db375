"""Dock widgets: thin Qt front ends over the engine, one module each; `_runner` runs their
work off the GUI thread and reports their errors, `_controls` holds the shared pickers."""
