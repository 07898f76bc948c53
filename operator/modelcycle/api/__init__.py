"""Pydantic models of the five kinds and the CRDs generated from them. Imports no kopf and no client."""
