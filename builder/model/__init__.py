"""The torch side: the closed layer registry, the builder, LRN, weight porting and the summary."""
