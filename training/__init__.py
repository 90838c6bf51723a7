"""The shared trainer: trains any built spec on real data (see training.trainer)."""
