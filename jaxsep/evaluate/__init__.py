"""jaxsep.evaluate."""
