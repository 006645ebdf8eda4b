"""miniecs agent: realises a host spec on one hypervisor (see DESIGN.md)."""

__version__ = "0.1.0"
