"""What an operator watches: Prometheus metrics, JSON log lines, the store probe."""
