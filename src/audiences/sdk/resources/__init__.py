"""One module per API resource: the calls it makes, as a sync and an async class."""
