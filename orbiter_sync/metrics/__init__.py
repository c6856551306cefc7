"""Metrics: per-process counts on prometheus-client, and the fleet's numbers from Redis.

names.py names every series; snapshot.py holds what the fleet looks like now, which
fleet.py reads from Redis (``read_fleet``) and serves (``FleetCollector``, for
``orbiter-sync metrics serve`` or an app's own registry).
"""
