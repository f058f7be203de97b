"""The analytics API's routers: the collector and the trends releases."""
