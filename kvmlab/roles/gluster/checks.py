"""Checks of the role."""

CHECKS = ()
