"""Analytics without people: an anonymous beacon collector, Faust aggregation into
tumbling windows, and k-suppressed trend releases (promises P-03, P-04, P-20, P-22,
P-25, P-26)."""
