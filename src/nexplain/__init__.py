"""nexplain: explain what the units of vision models do across their whole activation range."""

__version__ = "0.1.0"
