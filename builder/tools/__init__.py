"""User-facing tools on top of the language and the model: the CLI, the drawing and the benchmark."""
