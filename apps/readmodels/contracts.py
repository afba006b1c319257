"""Read models' published language: none yet. The read side consumes orders' and
inventory's messages and answers queries; it tells nobody anything over the bus."""
