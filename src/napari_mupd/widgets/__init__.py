"""Dock widgets: thin Qt front ends over the engine, one module each."""
