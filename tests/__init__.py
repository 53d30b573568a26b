"""The test suite. A package (every folder has an ``__init__.py``), so helper
modules are imported by their full name (``tests.hardening.hardening_net``) by
pytest and mypy alike, and test files in different folders may share a name."""
