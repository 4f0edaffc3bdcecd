"""First-party distill plugins, installed as `distill_plugins`.

They register through the `distill` entry-point group exactly like third-party plugins.
"""
