"""Packaging: PyInstaller spec, cluster manifests, node installation."""
