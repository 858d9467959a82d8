"""jaxsep.data."""
