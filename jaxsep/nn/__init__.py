"""jaxsep.nn."""
