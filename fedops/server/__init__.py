"""The server's side of a round: selection, receiving and checking updates, aggregation (DP as a
wrapper around it), the server optimiser, and the server's own data (FLTrust's root set)."""
