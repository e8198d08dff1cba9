"""The library entry points the CLI calls. Each returns data; none prints or exits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sovkit.catalog import load_catalog
from sovkit.inventory import LoadedInventory, load_inventory
from sovkit.inventory.ansible import to_ansible_inventory
from sovkit.inventory.capacity import RackPower, rack_power
from sovkit.inventory.models import Site


def validate(path: Path | str) -> LoadedInventory:
    """Load and fully check an inventory; raises InventoryError listing every problem."""
    return load_inventory(path)


def inventory_schema() -> dict[str, Any]:
    """JSON Schema of the inventory (what editors and CI validate YAML against)."""
    schema = Site.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sovkit.dev/schemas/site-v1.json"
    schema["title"] = "sovkit Site inventory (sovkit.dev/v1)"
    return schema


def site_power(loaded: LoadedInventory) -> list[RackPower]:
    return rack_power(loaded.site, load_catalog())


def export_ansible(loaded: LoadedInventory) -> dict[str, Any]:
    keys = {h.name: str(loaded.resolve(h.ssh.key)) for h in loaded.site.hosts if h.ssh.key}
    return to_ansible_inventory(loaded.site, keys)
