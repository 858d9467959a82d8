"""jaxsep.bench."""
