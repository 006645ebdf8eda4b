"""``miniecs``: the operator CLI. One group per API resource (``vpc``, ``vswitch``, ``instance``...).

Layout: ``profiles`` (config file), ``client`` (HTTP + API errors), ``output``
(table/JSON), ``waiting`` (``--wait`` polling), ``context`` (what every command
shares), one module per resource group, and ``main`` which assembles the app.
"""
