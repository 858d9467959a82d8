"""jaxsep.recipes."""
