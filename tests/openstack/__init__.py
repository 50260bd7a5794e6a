"""Tests and fixtures against a real Keystone and a real Glance (PyPI), started on loopback."""
