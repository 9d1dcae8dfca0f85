"""Deployment: load a model folder and predict; export, quantize and serve build on this."""
