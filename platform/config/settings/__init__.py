"""Settings: ``base`` holds everything shared; ``dev`` is the embedded default and
``production`` refuses to start without the secrets it needs."""
