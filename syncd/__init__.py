"""syncd: keep a Nebuly project's platform users equal to a company directory."""

__version__ = "0.1.0"
