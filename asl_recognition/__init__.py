"""ASL alphabet recognition: data, training, serving and monitoring, orchestrated by ClearML."""

__version__ = "0.1.0"
