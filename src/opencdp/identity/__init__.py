"""Identity: find customer records that belong to the same person, and merge them."""
