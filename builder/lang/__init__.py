"""The spec language, torch-free: models, YAML reading, located errors, loading, shapes, diff, schema."""
