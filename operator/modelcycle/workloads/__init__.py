"""What runs inside Jobs and serving pods: data, train, validate, serve, drift."""
