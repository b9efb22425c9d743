"""multinic: a CNI meta-plugin with its delegate plugins built in."""

__version__ = "0.1.0"
