"""The package's version, in one place: pyproject.toml reads it from here
(``[tool.setuptools.dynamic]``) and ``roomcast.__version__`` is this."""

__version__ = "0.1.0.dev0"
