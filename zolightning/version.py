"""The package's version, in a module of its own so that any layer can read it without importing the package's front
door (``zolightning/__init__.py``, which imports the module and everything under it)."""

__version__ = "0.1.0"
