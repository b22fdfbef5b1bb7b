"""Pictures of a cache: slice overlays (`cache show`) and dataset statistics (`cache stats`)."""
