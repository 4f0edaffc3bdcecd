"""Acme's distill plugins: the `acme-faq` teacher and the `acme-blocklist` filter.

Each plugin module is its own entry point (see pyproject.toml), so this file imports
neither: loading one plugin never pays for the other.
"""

__version__ = "0.1.0"
