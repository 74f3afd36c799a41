"""snake_model: the shared core (loader, model spec, network, predictor). Nothing heavy happens at import."""

__version__ = "0.1.0"
