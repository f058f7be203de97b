-- The ops gauges count held notices at each scrape of /metrics: only held ones indexed.
CREATE INDEX notices_held ON notices (held_until) WHERE held_until IS NOT NULL;
