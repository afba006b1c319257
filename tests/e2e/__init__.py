"""End-to-end tests: a real ``manage.py runplatform`` driven over HTTP.

A package (this file) so its modules are ``e2e.*`` (tests/browser imports its conftest and
harness by that name). No two test files in the repo share a name (tests/test_layout.py)."""
