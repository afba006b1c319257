"""A one-model app for the comparison systems: the business row each transaction commits."""
