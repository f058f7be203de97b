"""Notifier: every email and in-site notice of the platform, through one compliance gate.

It keeps a sealed projection of contact cards, turns events and ``SendNotice`` commands
into inbox items and keyed email deliveries, and sends email with aiosmtplib.
"""
