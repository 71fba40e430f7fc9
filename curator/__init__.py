"""curator: buy chain-of-thought from a teacher, keep what is right and clean, ship it to SFT."""

__version__ = "0.1.0"
