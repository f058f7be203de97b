"""Pure rules of analytics: beacons, edge signals, visitor hashing, windows, releases."""
