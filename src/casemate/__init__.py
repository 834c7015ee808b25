"""Casemate: a security gateway for container clusters."""

__version__ = "0.1.0"
