"""Providers turn rendered XML into running objects. Only libvirt.py imports libvirt."""
