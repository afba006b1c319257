"""What a Prometheus scrape said, for tests: the exposition parsed with prometheus_client's
own parser, read by sample name and labels."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str):
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, name: str, /, **labels: str) -> list:
        """The samples called ``name`` whose labels include ``labels``."""
        return [sample for family in self.families.values() for sample in family.samples
                if sample.name == name and labels.items() <= sample.labels.items()]

    def total(self, name: str, /, **labels: str) -> float:
        """The sum of those samples; 0 when there is none (a counter nobody has counted yet)."""
        return sum(sample.value for sample in self.samples(name, **labels))

    def value(self, name: str, /, **labels: str) -> float | None:
        """The one sample with exactly these labels, or None."""
        found = [sample.value for sample in self.samples(name, **labels) if sample.labels == labels]
        assert len(found) <= 1, f"{name}{labels}: {found}"
        return found[0] if found else None
