"""jaxsep.models."""
