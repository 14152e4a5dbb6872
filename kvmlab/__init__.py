"""kvmlab: multi-VM KVM storage labs from a short YAML file, verified with pytest."""

__version__ = "0.1.0"
