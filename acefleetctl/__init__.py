"""``acefleet``: the operator's command line over central's API (``acefleet --help``)."""
