"""HTTP layer: thin routers; the logic lives in ``controller.services``."""
