"""newsletter: write an issue as a plain file, compose it once, send it to every subscriber once."""

__version__ = "0.1.0"
