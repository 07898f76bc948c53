"""One kopf module per kind."""
