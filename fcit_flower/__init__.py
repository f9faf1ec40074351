"""fcit-flower: federated continual instruction tuning (FCIT) and DISCO on Flower."""

__version__ = "0.1.0"
