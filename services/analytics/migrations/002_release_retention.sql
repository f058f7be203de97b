-- Release receipts are kept for IMT_ANALYTICS_RELEASE_RETENTION_DAYS, then deleted by
-- the aggregator's clean-up (an anonymous public request writes one: never unbounded).
CREATE INDEX trend_releases_released_at ON trend_releases (released_at);
