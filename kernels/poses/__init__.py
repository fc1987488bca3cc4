"""Cameras and pose conditions."""
