"""Launching the app: simulation and loopback deployment on one process kit."""
