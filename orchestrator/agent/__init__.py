"""acefleet."""
