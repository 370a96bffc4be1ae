"""revbridge: healthcare revenue-cycle integration middleware."""
