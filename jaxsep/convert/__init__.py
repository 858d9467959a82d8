"""jaxsep.convert."""
