"""Native CNI plugins: interface plugins and chained plugins, one module per type."""
