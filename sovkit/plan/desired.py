"""Desired state: what each host should run, derived from the inventory alone (pure, no I/O but templates).

Each component kind builds its own desired records (sovkit/components/); this module is the plan's view of
them. Serving configs are rendered from Jinja2 templates, so their digest is part of the plan and the host
only writes the bytes it is given.
"""

from __future__ import annotations

from sovkit.components.base import SiteIndex, StoreFile, host_prefix
from sovkit.components.firmware import DesiredFirmware
from sovkit.components.host import DesiredHost, desired_host, desired_site, pinned_artifacts
from sovkit.components.model import DesiredModel
from sovkit.components.runtime import DesiredRuntime
from sovkit.components.serving import DesiredServing

_SiteIndex = SiteIndex

__all__ = ["DesiredFirmware", "DesiredHost", "DesiredModel", "DesiredRuntime", "DesiredServing", "SiteIndex",
           "StoreFile", "desired_host", "desired_site", "host_prefix", "pinned_artifacts"]
