"""The adapter interface: components, model adapters, loading, hooks."""
