"""Routes between backends: experiments with sticky assignment, fallbacks, shadows."""

from gateway.routing.config import Experiment, RouteConfig, Shadow, Variant, parse_routes
from gateway.routing.router import OVERRIDE_HEADER, RoutePlan, Router, Units

__all__ = [
    "OVERRIDE_HEADER",
    "Experiment",
    "RouteConfig",
    "RoutePlan",
    "Router",
    "Shadow",
    "Units",
    "Variant",
    "parse_routes",
]
