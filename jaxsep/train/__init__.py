"""jaxsep.train."""
