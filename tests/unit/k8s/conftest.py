"""Fixtures for the Kubernetes client tests: the API server double."""

from tests.support.fixtures_apiserver import apiserver  # noqa: F401  (re-exported fixture)
