"""Domain-free helpers: identifiers, clock, cursor codec. Imports nothing above itself."""
