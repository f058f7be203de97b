"""The deletion API's routers: thin, they validate, run one transaction, shape the answer."""
