"""The declarative site inventory: models, YAML loader with locations, cross-reference checks."""

from sovkit.inventory.loader import LoadedInventory, load_inventory
from sovkit.inventory.models import Site

__all__ = ["LoadedInventory", "Site", "load_inventory"]
