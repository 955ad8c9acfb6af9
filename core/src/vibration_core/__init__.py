"""Shared signal core of vibration-edge."""
