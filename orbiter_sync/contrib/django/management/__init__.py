"""Management commands of the orbiter-sync Django app."""
