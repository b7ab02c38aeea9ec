"""cxrviewer: chest X-ray workstation viewer with embedded models."""

__version__ = "0.1.0"
