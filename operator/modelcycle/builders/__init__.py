"""Pure manifest builders: dict in, dict out. Imports no kopf and no client."""
