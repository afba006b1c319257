"""End-to-end tests: a real ``manage.py runplatform`` driven over HTTP.

A package (this file) so its modules are ``e2e.*``: ``tests/flows/test_order_flow.py``
has no package either, and two rootdir-less ``test_order_flow`` modules would clash."""
