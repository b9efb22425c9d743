"""Kubernetes: annotations and NAD resolution (pure), the API client, pod/NAD sources, events."""
