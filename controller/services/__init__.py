"""Business logic, one module per resource. Routers call these; these raise
``controller.errors`` exceptions and own their transactions."""
