"""Asset generators: the interface, the built-in one and the external providers' adapters."""
