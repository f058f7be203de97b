"""The deletion service's pure rules: stages, dates, retention, replay, certificates."""
