"""miniecs agent: realises a host spec on one hypervisor (see DESIGN.md, docs/agent-api.md).

Layout (plan = pure function, apply = idempotent steps against the real thing):

* ``spec``        the contract shared with the controller
* ``config``      TOML config -> ``AgentConfig``; ``virt_type`` picks kvm/qemu (``auto`` probes)
* ``proc``        the one way to run a command; ``libvirt_conn`` / ``netlink`` the one
                  libvirt connection and netlink handle factories
* ``domain_xml``  ``render_domain_xml``; ``seed`` the NoCloud ISO
* ``network``     bridges, router namespaces, veths (plan/apply)
* ``storage``     image cache, qcow2 overlays, seeds, cleanup (plan/apply)
* ``compute``     domains: define/start/ACPI stop/power-off/reboot/remove, adoption (plan/apply)
* ``records``     versioned JSON of shutdowns in progress and completed operations
* ``reconcile``   one level-triggered pass -> ``HostReport``
* ``main``        enrolment, spec long-poll, reports, the loop; ``--spec F --once`` for one
                  pass without a controller
"""

__version__ = "0.1.0"
