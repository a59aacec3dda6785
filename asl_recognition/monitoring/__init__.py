"""Monitoring: Prometheus/Alertmanager config rendering, alert rules, drift baseline, status page.

Kept import-light (stdlib only) so ``alertmanager_config`` can run in a bare ``python`` container.
"""
