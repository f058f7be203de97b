"""Local infrastructure of the platform (Kafka, PostgreSQL, SMTP sink, gateway).

``python deploy/local/stack.py up`` starts it; tests call :func:`deploy.local.stack.ensure_up`.
"""
