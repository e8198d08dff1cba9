"""Plans: desired state from the inventory, a pure diff against observed state, saved signed plans."""
